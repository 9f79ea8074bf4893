"""The outbox engine, below the features: the worker that claims due rows with a lease
and settles them (``worker``), how long each kind keeps trying (``policy``), and the
token bucket that paces callers (``throttle``). A feature owns its jobs: it registers a
``Handler`` per kind of row it writes, and the app hands them all to one worker."""

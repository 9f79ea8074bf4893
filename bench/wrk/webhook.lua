-- Signed Twilio webhooks, each sent once: the requests are prepared beforehand (one per
-- line: path, X-Twilio-Signature, I-Twilio-Idempotency-Token, form body, tab-separated)
-- because every one carries its own MessageSid and a signature over it. Thread n sends
-- lines n, n + threads, n + 2 * threads, ...; a thread that runs out starts over (its
-- requests are then retries, which the checker sees as duplicates).
--
-- Arguments (after --): <requests file> <wrk threads>

dofile(string.match(debug.getinfo(1, "S").source, "^@?(.*/)") .. "common.lua")

expected_status = 200

local prepared = {}
local index = 0
wrapped = 0

function init(args)
   local threads_n = tonumber(args[2])
   local line_no = 0
   for line in io.lines(args[1]) do
      line_no = line_no + 1
      if (line_no - tid) % threads_n == 0 then
         local path, signature, token, body =
            string.match(line, "^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         table.insert(prepared, wrk.format("POST", path, {
            ["Content-Type"] = "application/x-www-form-urlencoded",
            ["X-Twilio-Signature"] = signature,
            ["I-Twilio-Idempotency-Token"] = token,
         }, body))
      end
   end
end

function request()
   index = index + 1
   if index > #prepared then
      index = 1
      wrapped = wrapped + 1
   end
   return prepared[index]
end

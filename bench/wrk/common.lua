-- Shared by the benchmark scripts: thread ids, counting unexpected responses,
-- and a one-line JSON summary printed by done().
--
-- Each script sets `expected_status` and may set `check_body(body)`, which
-- returns false for a response that has the expected status but the wrong content.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

-- Per-thread counters (globals of each thread's Lua state, read back by done()).
unexpected = 0
wrong_body = 0
first_bad = ""

function auth_headers(auth)
   local headers = {
      ["Accept"] = "application/scim+json",
      ["Content-Type"] = "application/scim+json",
   }
   if auth ~= nil and auth ~= "" and auth ~= "-" then
      headers["Authorization"] = auth
   end
   return headers
end

function response(status, headers, body)
   if status ~= expected_status then
      unexpected = unexpected + 1
      if first_bad == "" then
         first_bad = status .. " " .. string.sub(body or "", 1, 300)
      end
   elseif check_body ~= nil and not check_body(body) then
      wrong_body = wrong_body + 1
      if first_bad == "" then
         first_bad = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

local function json_string(s)
   s = string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local total_unexpected, total_wrong, bad = 0, 0, ""
   for _, thread in ipairs(threads) do
      total_unexpected = total_unexpected + thread:get("unexpected")
      total_wrong = total_wrong + thread:get("wrong_body")
      if bad == "" then bad = thread:get("first_bad") end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},' ..
      '"unexpected_status":%d,"wrong_body":%d,"first_bad":%s}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max,
      total_unexpected, total_wrong, json_string(bad)))
end

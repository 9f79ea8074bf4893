-- Filter lookups: GET <url>?filter=userName eq "user<i>@bench.example",
-- with i drawn at random over the seeded users for every request.
-- A response other than 200, or a 200 that does not find exactly one user, is counted.
--
-- Arguments (after --): <number of seeded users> <Authorization header value, or ->

dofile(string.match(debug.getinfo(1, "S").source, "^@?(.*/)") .. "common.lua")

expected_status = 200

function check_body(body)
   return string.find(body, '"totalResults"%s*:%s*1%s*[,}]') ~= nil
end

local function urlencode(s)
   return (string.gsub(s, "[^%w%-%._~]", function(c)
      return string.format("%%%02X", string.byte(c))
   end))
end

function init(args)
   users = tonumber(args[1])
   headers = auth_headers(args[2])
   headers["Content-Type"] = nil
   math.randomseed(os.time() * 1000 + tid)
end

function request()
   local i = math.random(1, users)
   local filter = 'userName eq "user' .. i .. '@bench.example"'
   return wrk.format("GET", wrk.path .. "?filter=" .. urlencode(filter), headers)
end

-- Agents' replies: POST {"text"} to the conversations listed in a file (one path per
-- line), round robin. Arguments (after --): <paths file> <Authorization header value>

dofile(string.match(debug.getinfo(1, "S").source, "^@?(.*/)") .. "common.lua")

expected_status = 202

local paths = {}
local index = 0

function init(args)
   for line in io.lines(args[1]) do table.insert(paths, line) end
   headers = {["Content-Type"] = "application/json", ["Authorization"] = args[2]}
   index = tid
end

function request()
   index = index + 1
   local path = paths[(index % #paths) + 1]
   return wrk.format("POST", path, headers, '{"text":"Thanks, your order ships today."}')
end

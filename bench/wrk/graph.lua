-- Graph change notifications, prepared beforehand (one per line: path, JSON body,
-- tab-separated), each POST carrying several items as Graph groups them. Thread n sends
-- lines n, n + threads, ...; a thread that runs out starts over.
--
-- Arguments (after --): <requests file> <wrk threads>

dofile(string.match(debug.getinfo(1, "S").source, "^@?(.*/)") .. "common.lua")

expected_status = 202

local prepared = {}
local index = 0
wrapped = 0

function init(args)
   local threads_n = tonumber(args[2])
   local line_no = 0
   for line in io.lines(args[1]) do
      line_no = line_no + 1
      if (line_no - tid) % threads_n == 0 then
         local path, body = string.match(line, "^([^\t]*)\t(.*)$")
         table.insert(prepared, wrk.format("POST", path, {
            ["Content-Type"] = "application/json; charset=utf-8",
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

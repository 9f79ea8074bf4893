-- Creates: POST <url> with a new user per request. The userName, externalId and
-- phone number are unique per request: a tag for the run, the wrk thread id, and a
-- per-thread counter. A response other than 201 is counted.
--
-- Arguments (after --): <run tag> <phone prefix, digits> <Authorization header value, or ->
-- The phone number is +<prefix><thread id, 2 digits><counter, 6 digits> (E.164; with a
-- prefix of 1 and two digits, a North American number of 10 digits, as bench/seeding.py).

dofile(string.match(debug.getinfo(1, "S").source, "^@?(.*/)") .. "common.lua")

expected_status = 201

local template = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],'
   .. '"userName":"%s","externalId":"new-%s","displayName":"New User %s",'
   .. '"name":{"givenName":"New","familyName":"User %s"},'
   .. '"emails":[{"type":"work","value":"%s","primary":true}],'
   .. '"phoneNumbers":[{"type":"work","value":"%s"}],'
   .. '"active":true}'

function init(args)
   tag = args[1]
   phone_prefix = "+" .. args[2]
   headers = auth_headers(args[3])
   counter = 0
end

function request()
   counter = counter + 1
   local key = tag .. "-" .. tid .. "-" .. counter
   local name = "new-" .. key .. "@bench.example"
   local phone = phone_prefix .. string.format("%02d%06d", tid, counter)
   local body = string.format(template, name, key, key, key, name, phone)
   return wrk.format("POST", nil, headers, body)
end

-- Read events of one stream by version range, in one round trip.
--
-- KEYS[1] the global log stream, KEYS[2] the stream's index list
-- ARGV[1], ARGV[2] 0-based index range into the list (LRANGE semantics)
-- Reply: a flat list of XRANGE entries {position, {field, value, ...}} in version order.
local positions = redis.call('LRANGE', KEYS[2], ARGV[1], ARGV[2])
local out = {}
for i = 1, #positions do
  local entry = redis.call('XRANGE', KEYS[1], positions[i], positions[i])
  if entry[1] then out[#out + 1] = entry[1] end
end
return out

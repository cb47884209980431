-- Store a snapshot unless one as new is already there; never past the head.
-- KEYS[1] the snapshot hash, KEYS[2] the stream's index list
-- ARGV: version, schema, state JSON.  Reply: 1 stored, 0 kept the existing one.
local version = tonumber(ARGV[1])
if version > redis.call('LLEN', KEYS[2]) then
  return redis.error_reply('snapshot version ' .. version .. ' is past the head of the stream')
end
local current = redis.call('HMGET', KEYS[1], 'version', 'schema')
local current_version = tonumber(current[1] or '0')
-- same schema: only a newer snapshot replaces it; another schema: the old one is useless
if current[2] == ARGV[2] and current_version >= version then
  return 0
end
redis.call('HSET', KEYS[1], 'version', version, 'schema', ARGV[2], 'state', ARGV[3])
return 1

-- The versions (lengths of the per-stream index lists) of many streams, in one call.
-- KEYS: the index keys (<p>:s:<stream>); returns one integer per key, 0 for none.
local versions = {}
for i, key in ipairs(KEYS) do
  versions[i] = redis.call('LLEN', key)
end
return versions

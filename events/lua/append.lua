-- Atomically append events to one or more streams of the kernelhub log.
--
-- KEYS[1]   the global log stream (kh:log)
-- KEYS[2]   the event-id hash (kh:ids)
-- KEYS[2+j] the index list of the j-th stream in the batch
-- ARGV[1]   number of streams n
-- then n triples: stream name, expected version (-1 = any), event count
-- then for every event, in stream order: event id, canonical JSON body
--
-- Order of checks (docs/architecture.md, Commands and idempotency): duplicate ids first, so
-- a retried command gets its original positions back instead of a version conflict; then
-- versions.
-- Replies: {"ok", {version after, per stream}, {pos...}} | {"dup", {"pos ver"...}}
--          | {"partial", stored, total, id}
--          | {"conflict", stream, expected, actual}
local log_key, ids_key = KEYS[1], KEYS[2]
local n = tonumber(ARGV[1])
local names, expected, counts = {}, {}, {}
local a = 2
local total = 0
for j = 1, n do
  names[j] = ARGV[a]
  expected[j] = tonumber(ARGV[a + 1])
  counts[j] = tonumber(ARGV[a + 2])
  total = total + counts[j]
  a = a + 3
end
local first = a

-- 1. duplicates (HMGET in chunks: Lua's unpack has a stack limit)
local found = {}
local stored = 0
local first_stored = nil
local chunk = 500
for s = 0, total - 1, chunk do
  local ids = {}
  local e = math.min(s + chunk, total) - 1
  for i = s, e do ids[#ids + 1] = ARGV[first + 2 * i] end
  local got = redis.call('HMGET', ids_key, unpack(ids))
  for k = 1, #got do
    found[s + k] = got[k]
    if got[k] then
      stored = stored + 1
      if not first_stored then first_stored = ids[k] end
    end
  end
end
if total > 0 and stored == total then
  return {'dup', found}
end
if stored > 0 then
  return {'partial', stored, total, first_stored}
end

-- 2. expected versions
local versions = {}
for j = 1, n do
  local v = redis.call('LLEN', KEYS[2 + j])
  if expected[j] >= 0 and v ~= expected[j] then
    return {'conflict', names[j], expected[j], v}
  end
  versions[j] = v
end

-- 3. write: the log entry, the stream index, the id record
local out = {}
local ev = first
for j = 1, n do
  local v = versions[j]
  local positions = {}
  local id_pairs = {}
  for _ = 1, counts[j] do
    v = v + 1
    local pos = redis.call('XADD', log_key, '*', 's', names[j], 'v', v, 'e', ARGV[ev + 1])
    positions[#positions + 1] = pos
    id_pairs[#id_pairs + 1] = ARGV[ev]
    id_pairs[#id_pairs + 1] = pos .. ' ' .. v
    out[#out + 1] = pos
    ev = ev + 2
  end
  versions[j] = v
  if #positions > 0 then
    redis.call('RPUSH', KEYS[2 + j], unpack(positions))
    redis.call('HSET', ids_key, unpack(id_pairs))
  end
end
return {'ok', versions, out}

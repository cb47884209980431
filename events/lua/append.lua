-- Atomically append events to one or more streams of the kernelhub log.
--
-- KEYS[1]   the global log stream (kh:log)
-- KEYS[2]   the event-id hash (kh:ids)
-- KEYS[3]   the chain's head (kh:chain): "<position> <hash>" of the last entry
-- KEYS[3+j] the index list of the j-th stream in the batch
-- ARGV[1]   number of streams n
-- then n triples: stream name, expected version (-1 = any), event count
-- then for every event, in stream order: event id, canonical JSON body
--
-- Order of checks (docs/architecture.md, Commands and idempotency): duplicate ids first, so
-- a retried command gets its original positions back instead of a version conflict; then
-- versions.
-- Every entry carries h, a link of the log's hash chain (docs/audit.md):
--   h = SHA1(previous h \n previous position \n stream \n version \n body)
-- so editing, removing or moving an entry behind the store's back breaks the link of that
-- entry (or of the next one). The chain's first entry links to "" and the position of the
-- entry before it (a log written before the chain existed), or "".
-- Replies: {"ok", {version after, per stream}, {pos...}} | {"dup", {"pos ver"...}}
--          | {"partial", stored, total, id}
--          | {"conflict", stream, expected, actual}
local log_key, ids_key, chain_key = KEYS[1], KEYS[2], KEYS[3]
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
  local v = redis.call('LLEN', KEYS[3 + j])
  if expected[j] >= 0 and v ~= expected[j] then
    return {'conflict', names[j], expected[j], v}
  end
  versions[j] = v
end

-- 3. write: the log entry (chained), the stream index, the id record, the chain's head
local head = redis.call('GET', chain_key)
local prev_pos, prev_h
if head then prev_pos, prev_h = string.match(head, '^(%S+) (%S+)$') end
if not prev_pos then
  -- no head (a log from before the chain) or an unreadable one: the last entry's own link
  prev_pos, prev_h = '', ''
  local last = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)
  if last[1] then
    prev_pos = last[1][1]
    local fields = last[1][2]
    for f = 1, #fields, 2 do
      if fields[f] == 'h' then prev_h = fields[f + 1] end
    end
  end
end
local out = {}
local ev = first
for j = 1, n do
  local v = versions[j]
  local positions = {}
  local id_pairs = {}
  for _ = 1, counts[j] do
    v = v + 1
    local body = ARGV[ev + 1]
    local h = redis.sha1hex(prev_h .. '\n' .. prev_pos .. '\n' .. names[j] .. '\n' .. v .. '\n' .. body)
    local pos = redis.call('XADD', log_key, '*', 's', names[j], 'v', v, 'e', body, 'h', h)
    prev_pos, prev_h = pos, h
    positions[#positions + 1] = pos
    id_pairs[#id_pairs + 1] = ARGV[ev]
    id_pairs[#id_pairs + 1] = pos .. ' ' .. v
    out[#out + 1] = pos
    ev = ev + 2
  end
  versions[j] = v
  if #positions > 0 then
    redis.call('RPUSH', KEYS[3 + j], unpack(positions))
    redis.call('HSET', ids_key, unpack(id_pairs))
  end
end
if #out > 0 then redis.call('SET', chain_key, prev_pos .. ' ' .. prev_h) end
return {'ok', versions, out}

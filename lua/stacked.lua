-- A rule's limits decided together, all or nothing, mirroring
-- service/src/algorithm/stacked.rs: allowed only if every limit allows, and then every limit
-- is charged; if any denies, none is. Under a ban policy a banned key is answered from its ban
-- (limits read, not charged) and a denial counts as an offence that may start a ban. One script
-- call, so it is atomic; every key shares the client key's hash tag, so it runs on Redis Cluster.
-- KEYS     the (resource, key)'s state hash; then each sliding log's keys, in limit order
--          (KEY_COUNT[tag] each); then, with a ban policy, its ban state key; then, when
--          watching, the key-wide ban state key
-- ARGV     now_us ("" = Redis TIME; see prelude.lua), cost (0 = peek: compute, write nothing),
--          "1" to refuse while the key-wide ban state bans the key (another rule's scope "key"
--          ban), else "0"; "1" and the ban's after, within_us, duration_us, factor,
--          max_duration_us, lookback_us, or "0" without a ban; "1" and a lease id,
--          max_in_flight, lease_ttl_us to acquire a lease with the charge (a concurrency
--          limit; its sorted set is the last of KEYS), or "0"; then per limit: algorithm tag
--          (tb, gcra, fw, swc, swl), name, first and second parameter
-- Returns  per limit, flat: allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never);
--          then banned_for_us (0 = not banned) and 1 if this request started the ban, else 0;
--          with a lease, then 1 and its expiry (granted), 2 and the wait until a lease ends by
--          itself (full: nothing charged), or 0 and 0 (a limit denied or a ban refused: no slot
--          was asked for). Mirrors acquire_stacked in service/src/algorithm/concurrency.rs.
local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])
local state_key = KEYS[1]

local watch_key_wide = ARGV[3] == '1'
local ban = nil
local first_limit = 5
if ARGV[4] == '1' then
  ban = {
    after = tonumber(ARGV[5]), within = tonumber(ARGV[6]), duration = tonumber(ARGV[7]),
    factor = tonumber(ARGV[8]), max = tonumber(ARGV[9]), lookback = tonumber(ARGV[10]),
  }
  first_limit = 11
end
local lease = nil
if ARGV[first_limit] == '1' then
  lease = {
    id = ARGV[first_limit + 1], max = tonumber(ARGV[first_limit + 2]),
    ttl = tonumber(ARGV[first_limit + 3]), key = KEYS[#KEYS],
  }
  first_limit = first_limit + 4
else
  first_limit = first_limit + 1
end

-- Each limit, and the state hash field of those kept there: `<name>:<tag>` (tags hold no
-- colon, so no two limits' fields can meet, whatever their names).
local limits, fields = {}, {}
local next_key = 2
for a = first_limit, #ARGV, 4 do
  local tag = ARGV[a]
  local limit = {decide = algorithms[tag], p1 = tonumber(ARGV[a + 2]), p2 = tonumber(ARGV[a + 3])}
  if STATE[tag] then
    fields[#fields + 1] = ARGV[a + 1] .. ':' .. tag
    limit.field = #fields
  else
    local keys = {}
    for k = 1, KEY_COUNT[tag] do keys[k] = KEYS[next_key + k - 1] end
    next_key = next_key + KEY_COUNT[tag]
    limit.keys = keys
  end
  limits[#limits + 1] = limit
end
local stored, new = {}, {}
if #fields > 0 then stored = redis.call('HMGET', state_key, unpack(fields)) end

-- The reply, built in place: limit i's decision is flat[4i - 3] to flat[4i] (allowed,
-- remaining, reset_after_us, retry_after_us), then what `reply` appends.
local flat = {}
local function allowed(i) return flat[4 * i - 3] == 1 end
local function reset_after(i) return flat[4 * i - 1] end

-- Decides limit i into its place in the reply; returns `always`, or a log's write function.
local function decide(i, spend)
  local limit, at = limits[i], 4 * (i - 1)
  local extra
  if limit.keys then
    flat[at + 1], flat[at + 2], flat[at + 3], flat[at + 4], extra =
      limit.decide(limit.keys, now, spend, limit.p1, limit.p2)
  else
    local f = limit.field
    flat[at + 1], flat[at + 2], flat[at + 3], flat[at + 4], new[f], extra =
      limit.decide(stored[f], now, spend, limit.p1, limit.p2)
  end
  return extra
end

local function reply(banned_for, started, lease_code, lease_value)
  local n = 4 * #limits
  flat[n + 1] = banned_for
  flat[n + 2] = started
  if lease then
    flat[n + 3] = lease_code or 0
    flat[n + 4] = lease_value or 0
  end
  return flat
end

-- A banned key is answered from its ban: its limits read, nothing charged.
local function refused(state)
  local remaining = ban_remaining(state, now)
  if not remaining then return nil end
  for i = 1, #limits do decide(i, 0) end
  return reply(remaining, 0)
end
local ban_key, ban_state = nil, nil
if ban then
  ban_key = KEYS[next_key]
  next_key = next_key + 1
end
-- As the Rust store reads them: a key-wide ban first, then the rule's own.
if watch_key_wide then
  local answer = refused(ban_load(KEYS[next_key]))
  if answer then return answer end
end
if ban then
  ban_state = ban_load(ban_key)
  local answer = refused(ban_state)
  if answer then return answer end
end

-- A lease is taken only with a free slot (or renewed when live): a full key is answered
-- with every limit read and nothing charged.
local lease_live = false
if lease then
  redis.call('ZREMRANGEBYSCORE', lease.key, '-inf', now)
  lease_live = redis.call('ZSCORE', lease.key, lease.id) ~= false
  if not lease_live and redis.call('ZCARD', lease.key) >= lease.max then
    local earliest = redis.call('ZRANGE', lease.key, 0, 0, 'WITHSCORES')
    for i = 1, #limits do decide(i, 0) end
    return reply(0, 0, 2, math.max(tonumber(earliest[2]) - now, 0))
  end
end

local writes, all = {}, true
for i = 1, #limits do
  writes[i] = decide(i, cost)
  if not allowed(i) then all = false end
end
if not all then
  -- Allowed here, but another limit denied: charge nothing and report what is left.
  for i = 1, #limits do
    if allowed(i) then writes[i] = decide(i, 0) end
  end
end
if cost > 0 then
  -- The hash lives until its slowest limit is fresh again: each decision's reset is from the
  -- state it leaves (written or kept), so a limit that wrote nothing still keeps its field.
  local assignments, reset = {}, 0
  for i, limit in ipairs(limits) do
    if limit.keys then
      writes[i](all)
    else
      if all or writes[i] then
        assignments[#assignments + 1] = fields[limit.field]
        assignments[#assignments + 1] = new[limit.field]
      end
      reset = math.max(reset, reset_after(i))
    end
  end
  if #assignments > 0 then
    redis.call('HSET', state_key, unpack(assignments))
    redis.call('PEXPIRE', state_key, ttl_ms(reset))
  end
end

local banned_for, started = 0, 0
if ban and not all and cost > 0 then
  local duration = ban_record(ban, ban_state, now)
  if duration then banned_for, started = duration, 1 end
  ban_store(ban_key, ban, ban_state, now)
end
if lease and all then
  local expires = now + lease.ttl
  redis.call('ZADD', lease.key, expires, lease.id)
  -- The set lives as long as its latest lease.
  local latest = redis.call('ZRANGE', lease.key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', lease.key, ttl_ms(tonumber(latest[2]) - now))
  return reply(banned_for, started, 1, expires)
end
return reply(banned_for, started)

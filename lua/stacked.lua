-- A rule's limits decided together, all or nothing, mirroring
-- service/src/algorithm/stacked.rs: allowed only if every limit allows, and then every limit
-- is charged; if any denies, none is. One script call, so it is atomic, and every key shares
-- the client key's hash tag, so it runs on Redis Cluster too.
-- KEYS     each limit's state keys, in order (KEY_COUNT[tag] each, default one)
-- ARGV     now_us ("" = Redis TIME; see prelude.lua), cost (0 = peek: compute, write nothing),
--          then per limit: algorithm tag (tb, gcra, fw, swc, swl), first and second parameter
-- Returns  per limit, flat: allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never)
local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])

local limits = {}
local next_key = 1
for a = 3, #ARGV, 3 do
  local tag = ARGV[a]
  local count = KEY_COUNT[tag] or 1
  local keys = {}
  for k = 1, count do keys[k] = KEYS[next_key + k - 1] end
  next_key = next_key + count
  limits[#limits + 1] = {
    decide = algorithms[tag], keys = keys, p1 = tonumber(ARGV[a + 1]), p2 = tonumber(ARGV[a + 2]),
  }
end

local function decide(limit, spend) return limit.decide(limit.keys, now, spend, limit.p1, limit.p2) end

local decisions, writes, all = {}, {}, true
for i, limit in ipairs(limits) do
  decisions[i], writes[i] = decide(limit, cost)
  if decisions[i][1] == 0 then all = false end
end
if not all then
  -- Allowed here, but another limit denied: charge nothing and report what is left.
  for i, limit in ipairs(limits) do
    if decisions[i][1] == 1 then decisions[i], writes[i] = decide(limit, 0) end
  end
end
if cost > 0 then
  for i = 1, #limits do writes[i](all) end
end

local reply = {}
for _, d in ipairs(decisions) do
  for _, field in ipairs(d) do reply[#reply + 1] = field end
end
return reply

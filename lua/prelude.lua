-- Prepended to the decision script when the service loads it (service/src/store/redis.rs):
-- one way to read time, to expire state and to write numbers, and the table the algorithm
-- files (token_bucket.lua, gcra.lua, ...) add their decide function to.

-- Microseconds: ARGV[1] when a test pins it, else Redis TIME (so node clocks never matter).
local function now_us(pinned)
  local now = tonumber(pinned)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- State is fresh again once reset_after has passed, so it may expire then; a second of slack
-- keeps it when script time and Redis's expiry clock disagree (a pinned test clock, a step).
local function ttl_ms(reset_us) return math.ceil(reset_us / 1000) + 1000 end

-- Numbers go to redis.call as Lua numbers: Redis writes an argument number in an exact decimal
-- form itself (17 significant digits), so a stored double reads back as the same double, and
-- the script spends no string.format per value, the dearest step of a decision
-- (results/benchmarks/redis-script-cost.md). `num` is for a number inside a string the script
-- builds (a sliding log's member), in the same form: integers below 2^53 print as integers.
local function num(x) return string.format('%.17g', x) end

-- value when it differs from what is stored, else nil: a field left as it was costs no write
-- (a window's start moves once a window, its count on every charge).
local function changed(value, kept)
  if value ~= kept then return value end
  return nil
end

-- A limit's state lives in one of two places. Most algorithms keep a few fields in the
-- (resource, key)'s state hash, shared by every limit of the rule, so a decision reads all of
-- them with one HMGET and writes them with one HSET and one PEXPIRE however many limits the rule
-- stacks. FIELDS[tag] names such an algorithm's fields, and its decide function is
--   algorithms[tag](stored, new, o, now, cost, p1, p2)
--     -> allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never), always
--     stored    the hash's stored values; this limit's are stored[o + 1], stored[o + 2], ...
--               in FIELDS order (false when absent)
--     new       where it puts the fields' new values, at the same places (new[o + 1], ...);
--               nil for a field it leaves as stored (every call sets all of its places, so a
--               second call for the same limit replaces what the first put there)
--     always    true when the values are written on a denial too (a refill, a rolled window);
--               otherwise only when every limit allowed, so the charge stands
-- The decision comes back as values, not a table, so a call per limit allocates nothing. The
-- sliding log keeps a sorted set of its own, so it takes its keys instead (KEY_COUNT[tag] of
-- them, in KEYS after the state hash) and returns a write(commit) function of its own in place
-- of `always`. Nothing is written to Redis by a decide function itself, so a rule's limits can
-- be tried first.
local algorithms = {}
local FIELDS = {}
local KEY_COUNT = {}

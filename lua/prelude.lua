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
-- form itself (%.17g in Redis 7.0), cheaper than string.format in Lua. `num` is for a number inside a string the script builds
-- (a sliding log's member), in the same form: integers below 2^53 print as integers.
local function num(x) return string.format('%.17g', x) end

-- A limit's state lives in one of two places. Most algorithms keep theirs in one field of the
-- (resource, key)'s state hash, shared by every limit of the rule, so a decision reads all of
-- them with one HMGET and writes them with one HSET and one PEXPIRE however many limits the rule
-- stacks. The field, `<name>:<tag>`, holds the state's numbers as little-endian doubles
-- (struct.pack with STATE[tag] as the format): exact, and with no decimal parsing or formatting
-- per number, which cost more than an algorithm's arithmetic
-- (results/benchmarks/redis-script-cost.md). Such an algorithm's decide function is
--   algorithms[tag](kept, now, cost, p1, p2)
--     -> allowed 0|1, remaining, reset_after_us, retry_after_us (-1 = never), state, always
--     kept      the field's stored value, false when absent (a fresh state)
--     state     the field's new value
--     always    true when the state is written on a denial too (a refill, a rolled window);
--               otherwise only when every limit allowed, so the charge stands
-- The decision comes back as values, not a table, so a call per limit allocates only its new
-- state. The sliding log keeps a sorted set of its own, so it takes its keys instead
-- (KEY_COUNT[tag] of them, in KEYS after the state hash) and returns a write(commit) function
-- of its own in place of state and `always`. Nothing is written to Redis by a decide function
-- itself, so a rule's limits can be tried first.
local algorithms = {}
local STATE = {}
local KEY_COUNT = {}

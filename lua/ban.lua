-- Bans for repeat offenders, mirroring service/src/algorithm/ban.rs operation for operation.
-- The ban state is a hash {offences, window_start_us, banned_until_us, last_duration_us} at a
-- key under the client key's hash tag, so the decision script reads and writes it atomically
-- with the limits. `ban` is {after, within, duration, factor, max, lookback} (microseconds).
local function ban_load(key)
  local s = redis.call('HMGET', key, 'offences', 'window_start_us', 'banned_until_us', 'last_duration_us')
  return {
    offences = tonumber(s[1] or '0'), window_start = tonumber(s[2] or '0'),
    banned_until = tonumber(s[3] or '0'), last_duration = tonumber(s[4] or '0'),
  }
end

-- Microseconds of ban left, or nil.
local function ban_remaining(state, now)
  if state.banned_until > now then return state.banned_until - now end
  return nil
end

-- Counts a denial; returns the duration of the ban it starts, or nil.
local function ban_record(ban, state, now)
  if state.offences == 0 or now >= state.window_start + ban.within then
    state.offences = 0
    state.window_start = now
  end
  state.offences = state.offences + 1
  if state.offences < ban.after then return nil end
  local duration = ban.duration
  if state.last_duration > 0 and now < state.banned_until + ban.lookback then
    duration = math.min(math.floor(state.last_duration * ban.factor), ban.max)
  end
  state.offences = 0
  state.banned_until = now + duration
  state.last_duration = duration
  return duration
end

-- Stores the state until nothing in it can matter any more.
local function ban_store(key, ban, state, now)
  local offences_end, repeats_end = 0, 0
  if state.offences > 0 then offences_end = state.window_start + ban.within end
  if state.last_duration > 0 then repeats_end = state.banned_until + ban.lookback end
  redis.call('HSET', key, 'offences', state.offences, 'window_start_us', state.window_start,
    'banned_until_us', state.banned_until, 'last_duration_us', state.last_duration)
  redis.call('PEXPIRE', key, ttl_ms(math.max(math.max(offences_end, repeats_end) - now, 0)))
end

-- Ends one lease of a concurrency limit, mirroring Concurrency::release in
-- service/src/algorithm/concurrency.rs: expired leases are dropped first, so a lease past its
-- expiry is not live and releasing it answers 0. Prepended by prelude.lua (now_us).
-- KEYS     the (resource, key)'s lease set (see stacked.lua)
-- ARGV     now_us ("" = Redis TIME), the lease id
-- Returns  1 when the lease was live, else 0
local now = now_us(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZREM', KEYS[1], ARGV[2])

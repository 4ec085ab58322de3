//! The Redis side of the cluster pool: key names and the three Lua scripts that claim,
//! renew and release leases. Each script runs atomically in Redis, so two nodes can
//! never both see an account free and take it.
//!
//! Keys (one Redis database, not Redis Cluster: the scripts touch keys they build):
//! - `PREFIX:lease:USER@DOMAIN` = `"NODE TOKEN"`, expiring after the lease TTL;
//! - `PREFIX:lease:USER@DOMAIN:held` = `NODE`, no expiry: set by a claim, removed by a
//!   release whose line was seen to unregister. Found set by the next claim, it says the
//!   last holder did not unregister (it died), so its binding at the PBX must go first;
//! - `PREFIX:fence`: the fencing-token counter (only grows, also across data loss);
//! - `PREFIX:boot` = the `run_id` of the Redis process that holds the leases. Another
//!   one (a restart, with or without an old snapshot; a failover to a replica) may have
//!   lost leases still in use, so for the longest TTL any node uses (`PREFIX:maxttl`,
//!   and what the nodes remember of it) no new lease is granted (`PREFIX:settling`)
//!   while their holders write them again;
//! - `PREFIX:node:NAME`: each node's heartbeat (for `/cluster`), expiring after the TTL.
//!
//! Why scripts and not plain commands: a claim must test several keys and write two
//! (the lease and its `:held` marker) with nothing in between, and a renewal or release
//! must act only if the value is still ours (compare-and-expire, compare-and-delete),
//! which Redis has no single command for.

/// Redis key names for one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn lease(&self, user: &str, domain: &str) -> String {
        format!("{}:lease:{user}@{domain}", self.prefix)
    }

    /// The keys every script but RELEASE passes first: boot marker, settle window, fence
    /// counter, longest TTL.
    pub fn control(&self) -> [String; 4] {
        [
            format!("{}:boot", self.prefix),
            format!("{}:settling", self.prefix),
            format!("{}:fence", self.prefix),
            format!("{}:maxttl", self.prefix),
        ]
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}:node:{name}", self.prefix)
    }

    pub fn node_pattern(&self) -> String {
        format!("{}:node:*", self.prefix)
    }

    pub fn lease_pattern(&self) -> String {
        format!("{}:lease:*", self.prefix)
    }

    /// The account part of a lease key (None for other keys, such as `:held` markers).
    pub fn account_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":lease:")?;
        (!rest.ends_with(":held")).then_some(rest)
    }
}

/// Shared start of every script but RELEASE. KEYS[1] boot, KEYS[2] settling, KEYS[3]
/// fence counter, KEYS[4] longest TTL; ARGV[1] this node's TTL (ms), ARGV[2] its name,
/// ARGV[3] the longest TTL it has seen (ms). A Redis process other than the one that
/// holds the leases opens the settle window.
const PROLOGUE: &str = r#"
local ttl = tonumber(ARGV[1])
local stored = tonumber(redis.call('GET', KEYS[4]) or '0')
local window = math.max(ttl, tonumber(ARGV[3]), stored)
if window > stored then redis.call('SET', KEYS[4], window) end
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if redis.call('GET', KEYS[1]) ~= run then
  redis.call('SET', KEYS[1], run)
  redis.call('SET', KEYS[2], '1', 'PX', window)
end
local settling = redis.call('PTTL', KEYS[2])
"#;

/// CLAIM: KEYS[5..] candidate lease keys.
/// Returns `{n, token, previous holder or ''}` for the n-th candidate (1-based),
/// `{0}` when none is free, `{-1, ms}` while settling.
pub const CLAIM: &str = r#"
if settling > 0 then return {-1, settling} end
for i = 5, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local token = redis.call('INCR', KEYS[3])
    redis.call('SET', KEYS[i], ARGV[2] .. ' ' .. token, 'PX', ttl)
    local previous = redis.call('SET', KEYS[i] .. ':held', ARGV[2], 'GET')
    return {i - 4, token, previous or ''}
  end
end
return {0}
"#;

/// RENEW: KEYS[5..] lease keys, ARGV[4..] their values.
/// Returns one number per lease: 1 kept, 2 written again (gone while settling after
/// data loss: its holder is still using it), 0 lost (another value, or gone otherwise).
pub const RENEW: &str = r#"
local out = {}
for i = 5, #KEYS do
  local mine = ARGV[i - 1]
  local value = redis.call('GET', KEYS[i])
  if value == mine then
    redis.call('PEXPIRE', KEYS[i], ttl)
    out[#out + 1] = 1
  elseif (not value) and settling > 0 then
    redis.call('SET', KEYS[i], mine, 'PX', ttl)
    redis.call('SET', KEYS[i] .. ':held', ARGV[2])
    local token = tonumber(string.match(mine, '(%d+)$'))
    local counter = tonumber(redis.call('GET', KEYS[3]) or '0')
    if token and token > counter then redis.call('SET', KEYS[3], token) end
    out[#out + 1] = 2
  else
    out[#out + 1] = 0
  end
end
return out
"#;

/// RELEASE: KEYS[1] lease key, ARGV[1] our value, ARGV[2] "1" when the line was seen to
/// unregister. Deletes the lease only if it is still ours, and its `:held` marker only
/// if the PBX no longer has our binding. Returns 1 if it was ours.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] == '1' then redis.call('DEL', KEYS[1] .. ':held') end
  return 1
end
return 0
"#;

/// HEARTBEAT: KEYS[5] this node's key, ARGV[4] what it says of itself. Starts the settle
/// window as soon as any node sees another Redis process, and returns
/// `{ms the window still runs (0 or less: none), longest TTL in ms}`.
pub const HEARTBEAT: &str = r#"
redis.call('SET', KEYS[5], ARGV[4], 'PX', ttl)
return {settling, window}
"#;

/// The scripts, loaded once per process.
pub struct Scripts {
    pub claim: redis::Script,
    pub renew: redis::Script,
    pub release: redis::Script,
    pub heartbeat: redis::Script,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            claim: redis::Script::new(&format!("{PROLOGUE}{CLAIM}")),
            renew: redis::Script::new(&format!("{PROLOGUE}{RENEW}")),
            release: redis::Script::new(RELEASE),
            heartbeat: redis::Script::new(&format!("{PROLOGUE}{HEARTBEAT}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        let k = Keys::new("sipline");
        assert_eq!(k.lease("880", "pbx.example"), "sipline:lease:880@pbx.example");
        assert_eq!(
            k.account_of("sipline:lease:880@pbx.example"),
            Some("880@pbx.example")
        );
        assert_eq!(k.account_of("sipline:lease:880@pbx.example:held"), None);
        assert_eq!(k.account_of("other:lease:880@x"), None);
        assert_eq!(k.node("gw1"), "sipline:node:gw1");
    }
}

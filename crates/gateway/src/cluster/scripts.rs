//! The Redis side of the cluster pool: key names and the three Lua scripts that claim,
//! renew and release leases. Each script runs atomically in Redis, so two nodes can
//! never both see an account free and take it.
//!
//! Keys (one Redis database, not Redis Cluster: the scripts touch keys they build):
//! - `PREFIX:lease:USER@DOMAIN` = `"NODE TOKEN"`, expiring after the lease TTL;
//! - `PREFIX:lease:USER@DOMAIN:held` = `NODE`, no expiry: set by a claim, removed by a
//!   clean release. Found set by the next claim, it says the last holder died without
//!   unregistering, so its binding at the PBX must be removed first;
//! - `PREFIX:fence`: the fencing-token counter (only grows, also across data loss);
//! - `PREFIX:boot`: present while Redis has its data. Missing means Redis restarted
//!   empty (or was flushed): leases held before may still be in use, so for one TTL
//!   (`PREFIX:settling`) no new lease is granted while their holders write them again;
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

    /// The keys every claim and renewal passes first: boot marker, settle window, fence counter.
    pub fn control(&self) -> [String; 3] {
        [
            format!("{}:boot", self.prefix),
            format!("{}:settling", self.prefix),
            format!("{}:fence", self.prefix),
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

/// Shared start of CLAIM and RENEW: KEYS[1] boot, KEYS[2] settling, ARGV[1] TTL in ms.
/// Redis without the boot marker lost its data: open a settle window of one TTL.
const PROLOGUE: &str = r#"
local ttl = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], '1')
  redis.call('SET', KEYS[2], '1', 'PX', ttl)
end
local settling = redis.call('PTTL', KEYS[2])
"#;

/// CLAIM: KEYS[4..] candidate lease keys, ARGV[2] node name.
/// Returns `{n, token, previous holder or ''}` for the n-th candidate (1-based),
/// `{0}` when none is free, `{-1, ms}` while settling.
pub const CLAIM: &str = r#"
if settling > 0 then return {-1, settling} end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local token = redis.call('INCR', KEYS[3])
    redis.call('SET', KEYS[i], ARGV[2] .. ' ' .. token, 'PX', ttl)
    local previous = redis.call('SET', KEYS[i] .. ':held', ARGV[2], 'GET')
    return {i - 3, token, previous or ''}
  end
end
return {0}
"#;

/// RENEW: KEYS[4..] lease keys, ARGV[2] node name, ARGV[3..] their values.
/// Returns one number per lease: 1 kept, 2 written again (gone while settling after
/// data loss: its holder is still using it), 0 lost (another value, or gone otherwise).
pub const RENEW: &str = r#"
local out = {}
for i = 4, #KEYS do
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

/// RELEASE: KEYS[1] lease key, ARGV[1] our value. Deletes it (and its `:held` marker)
/// only if it is still ours. Returns 1 if it was.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[1] .. ':held')
  return 1
end
return 0
"#;

/// HEARTBEAT: KEYS[3] this node's key, ARGV[2] what it says of itself. Starts the settle
/// window as soon as any node sees Redis back without its data, and returns how long
/// it still runs (ms, 0 or less when it does not).
pub const HEARTBEAT: &str = r#"
redis.call('SET', KEYS[3], ARGV[2], 'PX', ttl)
return settling
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

//! Counting open things (connections, sessions) in all and per IP address, each holding
//! a place that is given back when dropped, however its owner ends. The one mechanism
//! behind every "at most N, at most M from one address" limit of the gateway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which bound refused a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Total,
    PerIp,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// At most `max_total` places, at most `max_per_ip` of them for one address.
#[derive(Debug, Clone)]
pub struct PerIpLimit {
    max_total: usize,
    max_per_ip: usize,
    open: Arc<Mutex<Open>>,
}

impl PerIpLimit {
    pub fn new(max_total: usize, max_per_ip: usize) -> PerIpLimit {
        PerIpLimit {
            max_total,
            max_per_ip,
            open: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places held now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Addresses holding at least one place (for tests: no entry outlives its places).
    pub fn addresses(&self) -> usize {
        self.lock().per_ip.len()
    }

    /// A place for `ip`, unless a bound is reached.
    pub fn take(&self, ip: IpAddr) -> Result<Place, Exceeded> {
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Exceeded::Total);
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            if *from_ip == 0 {
                open.per_ip.remove(&ip);
            }
            return Err(Exceeded::PerIp);
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Place {
            open: Arc::clone(&self.open),
            ip,
        })
    }
}

/// One place, given back when dropped.
#[derive(Debug)]
pub struct Place {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_in_all_and_per_address_and_given_back() {
        let limit = PerIpLimit::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limit.take(a).unwrap();
        let p2 = limit.take(a).unwrap();
        assert_eq!(limit.take(a).unwrap_err(), Exceeded::PerIp);
        let p3 = limit.take(b).unwrap();
        assert_eq!(limit.take(b).unwrap_err(), Exceeded::Total);
        assert_eq!(limit.open(), 3);
        drop(p1);
        let p4 = limit.take(a).unwrap();
        drop((p2, p3));
        assert_eq!((limit.open(), limit.addresses()), (1, 1));
        drop(p4);
        assert_eq!((limit.open(), limit.addresses()), (0, 0));
    }

    #[test]
    fn a_per_ip_bound_of_zero_leaves_no_entry_behind() {
        let limit = PerIpLimit::new(10, 0);
        assert_eq!(
            limit.take("192.0.2.1".parse().unwrap()).unwrap_err(),
            Exceeded::PerIp
        );
        assert_eq!(limit.addresses(), 0);
    }
}

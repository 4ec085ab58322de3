//! When each of many owners (lines, calls) next needs the clock: a min-heap with lazy
//! deletion, so finding the next deadline and the due owners costs O(log n) per
//! change instead of a scan of every line and call on every loop.
//!
//! Each owner has at most one live deadline (the map); the heap may also hold stale
//! entries of earlier deadlines, which are skipped when they surface and compacted
//! away when they outnumber the live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub struct Deadlines<K> {
    live: HashMap<K, Instant>,
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            live: HashMap::new(),
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> Deadlines<K> {
    /// `key` next needs the clock at `at` (`None`: not at all).
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        match at {
            Some(at) => {
                if self.live.insert(key, at) != Some(at) {
                    self.heap.push(Reverse((at, key)));
                }
            }
            None => {
                self.live.remove(&key);
            }
        }
        self.tidy();
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the owners due at `now` (their deadlines are forgotten: set them again).
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.live.get(&key) == Some(&at) {
                self.live.remove(&key);
                due.push(key);
            }
        }
        self.tidy();
        due
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Drops stale entries from the top (so `next` is exact) and rebuilds the heap
    /// when stale entries dominate (so it stays bounded by the live ones).
    fn tidy(&mut self) {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if self.live.get(key) == Some(at) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * self.live.len() + 64 {
            self.heap = self.live.iter().map(|(k, at)| Reverse((*at, *k))).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_earliest_live_deadline_comes_first_and_stale_ones_never() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Deadlines::default();
        d.set(1, Some(t0 + 5 * s));
        d.set(2, Some(t0 + 3 * s));
        d.set(3, Some(t0 + 9 * s));
        assert_eq!(d.next(), Some(t0 + 3 * s));
        d.set(2, Some(t0 + 7 * s)); // moved later: the old entry is stale
        assert_eq!(d.next(), Some(t0 + 5 * s));
        d.set(1, None);
        assert_eq!(d.next(), Some(t0 + 7 * s));
        assert_eq!(d.due(t0 + 6 * s), Vec::<i32>::new());
        assert_eq!(d.due(t0 + 9 * s), vec![2, 3]);
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
    }

    #[test]
    fn churn_keeps_the_heap_bounded() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for round in 0..1000u64 {
            for key in 0..10u32 {
                d.set(key, Some(t0 + Duration::from_millis(round * 10 + u64::from(key))));
            }
        }
        assert_eq!(d.len(), 10);
        assert!(d.heap.len() <= 2 * 10 + 64 + 1, "{}", d.heap.len());
        assert_eq!(d.due(t0 + Duration::from_secs(100)).len(), 10);
    }
}

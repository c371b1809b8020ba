//! One timing wheel for every connection of a listener: 1 ms slots, each holding the
//! connections whose next timer falls in it. Timers are rounded up to a grain (a few ms), so
//! that the connections' timers fire together and the engine wakes once for all of them
//! (srt-protocol's timers are periodic at 10 ms and more; a few ms later changes nothing). A
//! connection is entered again whenever its next timer moves earlier; a stale entry (one that
//! no longer matches the connection's current deadline) is dropped when its slot comes.
//! Deadlines beyond one turn of the wheel wait in their slot for the turn they belong to.

use std::time::{Duration, Instant};

/// Slots of the wheel: two seconds of 1 ms slots.
const SLOTS: usize = 2048;
/// A slot's span.
pub const TICK: Duration = Duration::from_millis(1);

/// An entry: a connection and the tick its timer falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    conn: u32,
    tick: u64,
}

/// The wheel.
#[derive(Debug)]
pub struct Wheel {
    start: Instant,
    slots: Vec<Vec<Entry>>,
    /// The first tick not yet advanced past.
    cursor: u64,
    /// Entries in all (stale ones included).
    len: usize,
    /// Ticks a deadline is rounded up to a multiple of.
    grain: u64,
}

impl Wheel {
    /// An empty wheel whose tick 0 starts at `start`, rounding deadlines up to `grain` ticks.
    pub fn new(start: Instant, grain: u64) -> Self {
        Self {
            start,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            cursor: 0,
            len: 0,
            grain: grain.max(1),
        }
    }

    /// The tick `at` falls in (rounded up to the grain: a timer never fires early).
    pub fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start);
        let ticks = since.as_nanos().div_ceil(TICK.as_nanos());
        let ticks = u64::try_from(ticks).unwrap_or(u64::MAX);
        ticks.div_ceil(self.grain).saturating_mul(self.grain)
    }

    /// When tick `tick` starts.
    pub fn instant_of(&self, tick: u64) -> Instant {
        self.start + TICK * u32::try_from(tick.min(u64::from(u32::MAX))).unwrap_or(u32::MAX)
    }

    fn slot(&mut self, tick: u64) -> Option<&mut Vec<Entry>> {
        let i = usize::try_from(tick % SLOTS as u64).ok()?;
        self.slots.get_mut(i)
    }

    /// Enters connection `conn` for tick `tick` (at least the current one); returns the tick
    /// it was entered for.
    pub fn insert(&mut self, conn: u32, tick: u64) -> u64 {
        let tick = tick.max(self.cursor);
        if let Some(slot) = self.slot(tick) {
            slot.push(Entry { conn, tick });
            self.len += 1;
        }
        tick
    }

    /// Takes out the entries of every tick up to the one `now` falls in, calling `due` with
    /// each connection and the tick it was entered for.
    pub fn advance(&mut self, now: Instant, mut due: impl FnMut(u32, u64)) {
        let now_tick = self.tick_of(now);
        // Never more than one turn: after that every slot has been seen.
        let last = now_tick.min(self.cursor + SLOTS as u64 - 1);
        while self.cursor <= last {
            let tick = self.cursor;
            self.cursor += 1;
            let Some(slot) = self.slot(tick) else {
                continue;
            };
            if slot.is_empty() {
                continue;
            }
            let (taken, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(slot)
                .into_iter()
                .partition(|e| e.tick <= now_tick);
            *slot = kept;
            self.len -= taken.len();
            for e in taken {
                due(e.conn, e.tick);
            }
        }
        if now_tick > last {
            self.cursor = now_tick + 1;
        }
    }

    /// The start of the earliest tick with an entry, if any.
    pub fn next(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        (0..SLOTS as u64)
            .map(|d| self.cursor + d)
            .find_map(|tick| {
                let i = usize::try_from(tick % SLOTS as u64).ok()?;
                self.slots
                    .get(i)?
                    .iter()
                    .map(|e| e.tick)
                    .min()
                    .filter(|t| *t <= tick + SLOTS as u64)
            })
            .map(|tick| self.instant_of(tick))
    }

    /// Entries held (stale ones included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_the_grain() {
        let start = Instant::now();
        let w = Wheel::new(start, 5);
        let at = |us: u64| start + Duration::from_micros(us);
        assert_eq!(w.tick_of(at(0)), 0);
        assert_eq!(w.tick_of(at(1)), 5);
        assert_eq!(w.tick_of(at(4_999)), 5);
        assert_eq!(w.tick_of(at(5_001)), 10);
    }

    #[test]
    fn timers_fire_in_their_tick_and_not_before() {
        let start = Instant::now();
        let mut w = Wheel::new(start, 1);
        let at = |ms: u64| start + Duration::from_millis(ms);
        w.insert(1, w.tick_of(at(5)));
        w.insert(2, w.tick_of(at(3)));
        w.insert(3, w.tick_of(at(3000))); // beyond one turn
        assert_eq!(w.next(), Some(at(3)));
        let mut fired = Vec::new();
        w.advance(at(2), |c, _| fired.push(c));
        assert!(fired.is_empty());
        w.advance(at(4), |c, _| fired.push(c));
        assert_eq!(fired, vec![2]);
        w.advance(at(5), |c, _| fired.push(c));
        assert_eq!(fired, vec![2, 1]);
        assert_eq!(w.len(), 1);
        // The far timer waits in its slot through a turn of the wheel.
        w.advance(at(2100), |c, _| fired.push(c));
        assert_eq!(fired, vec![2, 1]);
        w.advance(at(3000), |c, _| fired.push(c));
        assert_eq!(fired, vec![2, 1, 3]);
        assert!(w.is_empty() && w.next().is_none());
    }

    #[test]
    fn a_late_advance_catches_up_and_past_ticks_go_to_the_cursor() {
        let start = Instant::now();
        let mut w = Wheel::new(start, 1);
        for c in 0..100 {
            w.insert(c, u64::from(c) * 37);
        }
        let mut fired = Vec::new();
        w.advance(start + Duration::from_secs(10), |c, _| fired.push(c));
        fired.sort_unstable();
        assert_eq!(fired, (0..100).collect::<Vec<_>>());
        // Entered for a tick already past: it fires at the next advance.
        let t = w.insert(7, 0);
        assert!(t > 10_000);
        let mut again = Vec::new();
        w.advance(start + Duration::from_secs(10) + TICK, |c, _| again.push(c));
        assert_eq!(again, vec![7]);
    }
}

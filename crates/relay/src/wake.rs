//! Waking subscribers without a lock shared between them: a per-stream change counter and one
//! parking slot per subscriber.
//!
//! Every change a subscriber may wait for (a pushed frame, a publish starting or ending) bumps
//! the stream's epoch once the change is in place, then wakes the subscribers that parked. A
//! subscriber that has read everything remembers the epoch it read at: while the epoch stays
//! the same it knows with one atomic load that nothing is new, and to wait it stores its waker
//! in its own slot and raises its parked flag. Both sides store first and load second, all
//! sequentially consistent, so a change that races with a subscriber parking is seen by one of
//! them: either the subscriber sees the new epoch and reads again, or the waker sees the flag
//! and wakes it.
//!
//! Compared with one queue of waiters behind a lock, waiting and re-arming cost each
//! subscriber only its own slot; a wake-up walks every slot (one atomic load each), which is
//! cheap next to the writes the woken subscribers then make.
//!
//! A slot may be marked inline: its waker does its work in the wake-up call itself, on the
//! thread that made the change. Inline wakers are called after all the others, so that the
//! tasks of the others are scheduled (and can run on other threads) before that work starts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use crate::session::lock;

/// The change counter and parking slots of one stream.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    epoch: AtomicU64,
    slots: Mutex<Slots>,
}

/// Parking slots by index; an index is reused only after its subscriber has gone.
#[derive(Debug, Default)]
struct Slots {
    parkers: Vec<Option<Arc<Parker>>>,
    free: Vec<usize>,
}

/// One subscriber's parking slot.
#[derive(Debug, Default)]
pub(crate) struct Parker {
    parked: AtomicBool,
    /// Woken after the others (see the module comment).
    inline: AtomicBool,
    /// Written by the subscriber when it parks, read by whoever wakes it.
    waker: Mutex<Option<Waker>>,
}

/// A subscriber's registration with a [`Signal`]; give it back with [`Signal::unregister`].
#[derive(Debug)]
pub(crate) struct Registration {
    index: usize,
    parker: Arc<Parker>,
}

/// An epoch value no signal reaches: "never read".
pub(crate) const NEVER: u64 = u64::MAX;

impl Signal {
    /// The number of changes so far.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Records a change that is already in place and wakes every parked subscriber. Wakers
    /// run after the slot lock is released.
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut inline = Vec::new();
        let wakers: Vec<Waker> = {
            let slots = lock(&self.slots);
            slots
                .parkers
                .iter()
                .flatten()
                .filter(|p| {
                    p.parked.load(Ordering::SeqCst) && p.parked.swap(false, Ordering::SeqCst)
                })
                .filter_map(|p| {
                    let waker = lock(&p.waker).clone()?;
                    if p.inline.load(Ordering::Relaxed) {
                        inline.push(waker);
                        None
                    } else {
                        Some(waker)
                    }
                })
                .collect()
        };
        for waker in wakers.into_iter().chain(inline) {
            waker.wake();
        }
    }

    /// A new parking slot.
    pub(crate) fn register(&self) -> Registration {
        let parker = Arc::new(Parker::default());
        let mut slots = lock(&self.slots);
        let index = match slots.free.pop() {
            Some(index) => index,
            None => {
                slots.parkers.push(None);
                slots.parkers.len() - 1
            }
        };
        if let Some(slot) = slots.parkers.get_mut(index) {
            *slot = Some(Arc::clone(&parker));
        }
        Registration { index, parker }
    }

    /// Frees a parking slot.
    pub(crate) fn unregister(&self, registration: &Registration) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.parkers.get_mut(registration.index) {
            if slot
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, &registration.parker))
            {
                *slot = None;
                slots.free.push(registration.index);
            }
        }
    }
}

impl Registration {
    /// Parks: the next [`Signal::wake_all`] wakes `waker`. The caller must then check the
    /// epoch again (see the module comment) and [`Registration::unpark`] if it moved.
    pub(crate) fn park(&self, waker: &Waker) {
        {
            let mut slot = lock(&self.parker.waker);
            match &mut *slot {
                Some(current) if current.will_wake(waker) => {}
                other => *other = Some(waker.clone()),
            }
        }
        self.parker.parked.store(true, Ordering::SeqCst);
    }

    /// Takes back a park that turned out unnecessary (a wake-up may still come; it is harmless).
    pub(crate) fn unpark(&self) {
        self.parker.parked.store(false, Ordering::Relaxed);
    }

    /// Marks the slot inline: woken after every slot that is not.
    pub(crate) fn set_inline(&self) {
        self.parker.inline.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_only_parked_slots_once() {
        let signal = Signal::default();
        let (a, b) = (signal.register(), signal.register());
        let (ca, cb) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let before = signal.epoch();
        a.park(&Waker::from(Arc::clone(&ca)));
        signal.wake_all();
        signal.wake_all();
        assert_eq!(signal.epoch(), before + 2);
        assert_eq!(ca.0.load(Ordering::SeqCst), 1, "woken once per park");
        assert_eq!(cb.0.load(Ordering::SeqCst), 0, "never parked");

        b.park(&Waker::from(Arc::clone(&cb)));
        b.unpark();
        signal.wake_all();
        assert_eq!(cb.0.load(Ordering::SeqCst), 0, "unparked");
    }

    /// Records the order in which its wakers are woken.
    struct Order {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Wake for Order {
        fn wake(self: Arc<Self>) {
            lock(&self.log).push(self.name);
        }
    }

    #[test]
    fn inline_slots_are_woken_after_the_others() {
        let signal = Signal::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let registrations: Vec<Registration> = ["inline", "a", "b"]
            .into_iter()
            .map(|name| {
                let registration = signal.register();
                if name == "inline" {
                    registration.set_inline();
                }
                let waker = Waker::from(Arc::new(Order {
                    name,
                    log: Arc::clone(&log),
                }));
                registration.park(&waker);
                registration
            })
            .collect();
        signal.wake_all();
        assert_eq!(*lock(&log), ["a", "b", "inline"]);
        drop(registrations);
    }

    #[test]
    fn slots_are_reused_after_unregister() {
        let signal = Signal::default();
        let a = signal.register();
        let b = signal.register();
        signal.unregister(&a);
        signal.unregister(&a);
        let c = signal.register();
        assert_eq!(c.index, a.index);
        let count = Arc::new(Count::default());
        c.park(&Waker::from(Arc::clone(&count)));
        signal.unregister(&b);
        signal.wake_all();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}

//! Writing a stream's frames to its viewers from a few tasks per stream, instead of waking
//! every viewer's task for every frame.
//!
//! Each playing viewer has a [`Viewer`] cell, in one of two modes:
//!
//! - `Fast`: a shard task of the stream, woken once per change by a [`StreamWatch`], takes
//!   the viewer's ready frames (from the relay's encode-once cache) and writes them with one
//!   non-blocking vectored write, all under the cell's lock.
//! - `Task`: the viewer's own connection task writes. The shard switches a cell to `Task`
//!   and wakes that task whenever it cannot finish there: a write that would block, was
//!   partial or failed (the rest is left in the cell), or a `Started` or `Ended` event, which
//!   need the connection's RTMP session (a `Started` whose video RTMP cannot carry ends the
//!   play). The connection also takes over before it
//!   writes replies of its own. Once it has caught up (waiting for the socket when needed,
//!   with the stall timeout) and the relay has nothing more, it hands the cell back to `Fast`
//!   under the lock, so that a frame pushed meanwhile is either seen by it or by the next
//!   round of the shard.
//!
//! Only the mode's owner writes, so chunks never interleave, and a slow viewer never holds
//! up a shard: the shard leaves it to its own task. A push wakes the stream's shards instead
//! of one task per viewer, and a round touches little memory per viewer: no task is
//! scheduled or polled, no cancellation or read readiness is checked.
//!
//! A stream's first shard serves its viewers inline: its round runs in the push itself, on
//! the publisher's thread, right after the frames of a read are in the relay (the relay calls
//! it after waking every other waiter). No task is woken and no other core touches the
//! frames, which are still in this core's cache: at 1,000 viewers of a 2.5 Mbit/s stream on
//! two cores this cost a quarter less CPU than two shard tasks. It takes up to
//! [`INLINE_VIEWERS`]; a larger audience gets shard tasks as well, up to one per runtime
//! worker, so that every core writes. An inline round does not yield: the publisher's task
//! reads again when it is over, so a publisher that sends faster only makes each round carry
//! more. With a coalescing time every shard is a task, which sleeps that time before each
//! round.
//!
//! An audience that outgrows the first shard has its changes gathered as well, for the large
//! audience's coalescing time (40 ms by default): from its 1,025th viewer on, every shard of
//! the stream, the first one included, is a task that waits that long after a change before
//! its round, until the stream's last viewer leaves. Each viewer then gets the frames of
//! about two reads of the publisher in one write instead of one write per read. At 2,000
//! viewers of a 2.5 Mbit/s stream on two cores this cost 32-40 % of a core instead of 56-58 %,
//! for 76-84 ms of latency p99 instead of 39-40 (nginx-rtmp: over 1 s, in the same runs); up
//! to 1,024 viewers nothing is gathered.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use streamgate_relay::{Event, Hub, StreamWatch, Subscriber};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::AbortHandle;

use crate::encode::frame_bytes;
use crate::write::{send_now, unwritten, MAX_IOVECS};

/// Most relay events taken for one viewer in one write (one vectored write).
pub(crate) const MAX_EVENTS_PER_WRITE: usize = MAX_IOVECS;
/// Most frame bytes taken for one viewer in one write (a larger frame goes alone): what a
/// viewer whose socket is full keeps out of the relay's ring, so that a stalled viewer pins
/// little memory however large the stream's frames are.
pub(crate) const MAX_BYTES_PER_WRITE: usize = 1024 * 1024;
/// Viewers a shard serves before letting other tasks on its thread run.
const VIEWERS_PER_YIELD: usize = 64;
/// Viewers of a stream served by one shard task before another one starts (while the
/// runtime has more workers than shards).
const VIEWERS_PER_SHARD: usize = 256;
/// Viewers of a stream served by its inline shard before a shard task starts: a round of
/// this many took the publisher's thread for about 7 ms on the bench (a 2.5 Mbit/s stream,
/// a round for each read of the publisher's socket, 25 a second).
const INLINE_VIEWERS: usize = 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who writes to a viewer's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The stream's shard.
    Fast,
    /// The viewer's connection task.
    Task,
}

/// One playing viewer, shared by its connection task and its shard.
#[derive(Debug)]
pub(crate) struct Viewer {
    state: Mutex<ViewerState>,
    /// Raised when the shard hands the cell to the connection task.
    handoff: Flag,
}

#[derive(Debug)]
struct ViewerState {
    mode: Mode,
    /// `None` once the viewer has left.
    subscriber: Option<Subscriber>,
    writer: Arc<OwnedWriteHalf>,
    stream_id: u32,
    /// Left by the shard for the connection task: an event it cannot handle, bytes it could
    /// not write (they go first), or the error of its write.
    held: Option<Event>,
    unsent: Vec<Bytes>,
    failed: Option<std::io::Error>,
    /// The shard's buffer for one write, kept to avoid an allocation per round.
    batch: Vec<Bytes>,
}

/// What the connection task must do before handing the cell back (see [`Viewer::take_work`]).
#[derive(Debug)]
pub(crate) enum Work {
    /// Nothing: the cell is back in `Fast` mode.
    Done,
    /// Write `unsent`, then the chunks of `events`, then ask again.
    Write {
        unsent: Vec<Bytes>,
        events: Vec<Event>,
    },
    /// The shard's write failed.
    Failed(std::io::Error),
}

impl Viewer {
    /// A new cell in `Task` mode: the connection task starts the play (its GOP backlog,
    /// whose writes may well have to wait) and hands over when it has caught up.
    pub(crate) fn new(subscriber: Subscriber, writer: Arc<OwnedWriteHalf>, stream_id: u32) -> Self {
        Self {
            state: Mutex::new(ViewerState {
                mode: Mode::Task,
                subscriber: Some(subscriber),
                writer,
                stream_id,
                held: None,
                unsent: Vec::new(),
                failed: None,
                batch: Vec::new(),
            }),
            handoff: Flag::default(),
        }
    }

    /// Takes the cell for the connection task (before it writes replies of its own); waits
    /// for a shard write in progress to end.
    pub(crate) fn take_over(&self) {
        lock(&self.state).mode = Mode::Task;
    }

    /// For the connection task: what the shard left and what is ready now (at most `max`
    /// events); when there is nothing, the cell goes back to the shard.
    pub(crate) fn take_work(&self, max: usize) -> Work {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(e) = state.failed.take() {
            return Work::Failed(e);
        }
        let unsent = std::mem::take(&mut state.unsent);
        let mut events: Vec<Event> = state.held.take().into_iter().collect();
        let mut bytes = unsent.iter().map(Bytes::len).sum::<usize>();
        if let Some(subscriber) = state.subscriber.as_mut() {
            while events.len() < max && bytes < MAX_BYTES_PER_WRITE {
                match subscriber.try_recv() {
                    Some(event) => {
                        if let Event::Frame(f) = &event {
                            bytes += f.frame.payload.len();
                        }
                        events.push(event);
                    }
                    None => break,
                }
            }
        }
        if unsent.is_empty() && events.is_empty() {
            state.mode = Mode::Fast;
            return Work::Done;
        }
        Work::Write { unsent, events }
    }

    /// Completes when the shard has handed the cell to the connection task.
    pub(crate) fn handed_off(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.handoff.poll_take(cx))
    }

    /// The viewer's subscriber, dropped now rather than with the last reference to the cell
    /// (a shard round may hold one for a moment).
    fn leave(&self) {
        let mut state = lock(&self.state);
        state.mode = Mode::Task;
        state.subscriber = None;
        state.held = None;
        state.unsent.clear();
    }

    /// One shard visit: in `Fast` mode, write what is ready; hand over what cannot be done
    /// here.
    fn serve(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if state.mode != Mode::Fast {
            return;
        }
        let Some(subscriber) = state.subscriber.as_mut() else {
            return;
        };
        let mut hand_off = false;
        loop {
            let mut more = false;
            let mut bytes = 0;
            while state.batch.len() < MAX_EVENTS_PER_WRITE && bytes < MAX_BYTES_PER_WRITE {
                match subscriber.try_recv() {
                    Some(Event::Frame(frame)) => {
                        let encoded = frame_bytes(&frame, state.stream_id);
                        bytes += encoded.len();
                        if !encoded.is_empty() {
                            state.batch.push(encoded);
                        }
                    }
                    Some(other) => {
                        state.held = Some(other);
                        hand_off = true;
                        break;
                    }
                    None => break,
                }
                more = state.batch.len() == MAX_EVENTS_PER_WRITE || bytes >= MAX_BYTES_PER_WRITE;
            }
            if state.batch.is_empty() {
                break;
            }
            match send_now(&state.writer, &state.batch) {
                Ok(written) => {
                    let rest = unwritten(&state.batch, written);
                    if !rest.is_empty() {
                        state.unsent = rest;
                        hand_off = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    state.unsent = std::mem::take(&mut state.batch);
                    hand_off = true;
                }
                Err(e) => {
                    state.failed = Some(e);
                    hand_off = true;
                }
            }
            state.batch.clear();
            if hand_off || !more {
                break;
            }
        }
        if hand_off {
            state.mode = Mode::Task;
            drop(guard);
            self.handoff.raise();
        }
    }
}

/// A one-slot wake-up: raised by one side, taken by the waiting task.
#[derive(Debug, Default)]
struct Flag {
    raised: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Flag {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        {
            let mut slot = lock(&self.waker);
            match &mut *slot {
                Some(current) if current.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
        }
        // A raise between the first look and the registration found no waker.
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The viewer lists of one stream's shards; copied on change, so that a round reads a
/// snapshot without holding the lock.
type ViewerList = Mutex<Arc<Vec<Arc<Viewer>>>>;

/// One stream's shards, alive while the stream has playing viewers.
#[derive(Debug)]
struct Group {
    hub: Hub,
    name: String,
    shards: Mutex<Shards>,
    max_shards: usize,
    coalesce: Duration,
    /// The coalescing time once the audience is over [`INLINE_VIEWERS`] (when longer than
    /// `coalesce`).
    large_coalesce: Duration,
}

#[derive(Debug, Default)]
struct Shards {
    /// Started as the audience grows, up to one per runtime worker; never stopped before the
    /// group.
    list: Vec<Arc<Shard>>,
    /// Whether the audience has gone over [`INLINE_VIEWERS`] and every shard gathers changes
    /// for `large_coalesce`: from then on, until the group ends.
    gathering: bool,
}

#[derive(Debug)]
struct Shard {
    viewers: Arc<ViewerList>,
    /// Replaced once, when the audience goes over [`INLINE_VIEWERS`] and its changes are to
    /// be gathered.
    driver: Mutex<Driver>,
}

/// What runs a shard's rounds.
#[derive(Debug)]
enum Driver {
    /// Its own task ([`drive`]).
    Task(AbortHandle),
    /// The wake-up of the stream's changes, on the thread that made them.
    Inline(Arc<Inline>),
}

impl Driver {
    fn stop(&self) {
        match self {
            Driver::Task(task) => task.abort(),
            Driver::Inline(inline) => inline.stop(),
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.driver
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .stop();
    }
}

impl Shard {
    /// A shard of stream `name` with its driver task.
    fn start(hub: &Hub, name: &str, coalesce: Duration) -> Self {
        let viewers: Arc<ViewerList> = Arc::default();
        let driver = tokio::spawn(drive(Arc::clone(&viewers), hub.watch(name), coalesce));
        Self {
            viewers,
            driver: Mutex::new(Driver::Task(driver.abort_handle())),
        }
    }

    /// Hands the shard's rounds to a new task that lets changes gather for `coalesce`. Frames
    /// pushed meanwhile wait in the viewers' subscribers: the new task's first round, at once
    /// (after `coalesce`), takes them.
    fn restart(&self, hub: &Hub, name: &str, coalesce: Duration) {
        let task = tokio::spawn(drive(Arc::clone(&self.viewers), hub.watch(name), coalesce));
        let old = std::mem::replace(&mut *lock(&self.driver), Driver::Task(task.abort_handle()));
        old.stop();
    }

    /// A shard of stream `name` whose rounds run in the wake-ups of the stream's changes.
    fn inline(hub: &Hub, name: &str) -> Self {
        let viewers: Arc<ViewerList> = Arc::default();
        let mut watch = hub.watch(name);
        watch.set_inline();
        let inline = Arc::new(Inline {
            watch: Mutex::new(Some(watch)),
            viewers: Arc::clone(&viewers),
            pending: AtomicBool::new(false),
        });
        // The first poll parks the watch with the shard's waker.
        inline.run();
        Self {
            viewers,
            driver: Mutex::new(Driver::Inline(inline)),
        }
    }

    /// How many viewers it takes before another shard starts.
    fn capacity(&self) -> usize {
        match *lock(&self.driver) {
            Driver::Task(_) => VIEWERS_PER_SHARD,
            Driver::Inline(_) => INLINE_VIEWERS,
        }
    }

    fn len(&self) -> usize {
        lock(&self.viewers).len()
    }

    fn add(&self, viewer: &Arc<Viewer>) {
        let mut list = lock(&self.viewers);
        let mut viewers = Vec::with_capacity(list.len() + 1);
        viewers.extend(list.iter().cloned());
        viewers.push(Arc::clone(viewer));
        *list = Arc::new(viewers);
    }

    fn remove(&self, viewer: &Arc<Viewer>) {
        let mut list = lock(&self.viewers);
        let viewers: Vec<Arc<Viewer>> = list
            .iter()
            .filter(|v| !Arc::ptr_eq(v, viewer))
            .cloned()
            .collect();
        *list = Arc::new(viewers);
    }
}

/// An inline shard's waker: woken by the relay on the thread that changed the stream (after
/// every other waiter), it runs the shard's rounds there, then parks the watch again with
/// itself.
#[derive(Debug)]
struct Inline {
    /// `None` once the shard has stopped (which breaks the cycle through the watch's parked
    /// waker).
    watch: Mutex<Option<StreamWatch>>,
    viewers: Arc<ViewerList>,
    /// A wake-up not served yet: set by every wake-up, taken by the thread holding `watch`, so
    /// that one coming while another thread runs the rounds is served by that thread.
    pending: AtomicBool,
}

impl std::task::Wake for Inline {
    fn wake(self: Arc<Self>) {
        self.run();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.run();
    }
}

impl Inline {
    /// Serves every change not served yet: a round per change, until the watch parks. One
    /// thread at a time; a wake-up meanwhile leaves `pending` for that thread.
    fn run(self: &Arc<Self>) {
        self.pending.store(true, Ordering::SeqCst);
        loop {
            let mut slot = match self.watch.try_lock() {
                Ok(slot) => slot,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            let Some(watch) = slot.as_mut() else {
                return;
            };
            if self.pending.swap(false, Ordering::SeqCst) {
                let waker = Waker::from(Arc::clone(self));
                let mut cx = Context::from_waker(&waker);
                while watch.poll_changed(&mut cx).is_ready() {
                    let round = Arc::clone(&*lock(&self.viewers));
                    for viewer in round.iter() {
                        viewer.serve();
                    }
                }
            }
            drop(slot);
            // A wake-up that found the lock taken after the holder's last look.
            if !self.pending.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Ends the rounds: the watch (and with it the parked waker) goes.
    fn stop(&self) {
        let watch = lock(&self.watch).take();
        drop(watch);
    }
}

/// The fan-out groups of the RTMP and RTMPS listeners, by stream name.
#[derive(Debug, Default)]
pub(crate) struct FanOuts {
    groups: Mutex<HashMap<String, Weak<Group>>>,
    /// How long changes gather before a shard's round.
    coalesce: Duration,
    /// How long they gather once a stream's audience is over [`INLINE_VIEWERS`] (when
    /// longer).
    large_coalesce: Duration,
}

impl FanOuts {
    /// Groups whose shards let changes gather for `coalesce` before each round, and for
    /// `large_coalesce` (when longer) once the audience is over [`INLINE_VIEWERS`].
    pub(crate) fn new(coalesce: Duration, large_coalesce: Duration) -> Self {
        Self {
            groups: Mutex::default(),
            coalesce,
            large_coalesce,
        }
    }

    /// Puts `viewer` of stream `name` in one of the stream's shards (starting one if needed).
    /// Must be called inside a Tokio runtime. The viewer leaves when the membership drops.
    pub(crate) fn join(self: &Arc<Self>, hub: &Hub, name: &str, viewer: Arc<Viewer>) -> Membership {
        let group = {
            let mut groups = lock(&self.groups);
            match groups.get(name).and_then(Weak::upgrade) {
                Some(group) => group,
                None => {
                    let group = Arc::new(Group::new(hub, name, self.coalesce, self.large_coalesce));
                    groups.insert(name.to_owned(), Arc::downgrade(&group));
                    group
                }
            }
        };
        let shard = group.add(&viewer);
        Membership {
            fanouts: Arc::clone(self),
            name: name.to_owned(),
            group: Some(group),
            shard,
            viewer,
        }
    }
}

impl Group {
    fn new(hub: &Hub, name: &str, coalesce: Duration, large_coalesce: Duration) -> Self {
        let workers = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        Self {
            hub: hub.clone(),
            name: name.to_owned(),
            shards: Mutex::default(),
            max_shards: workers,
            coalesce,
            large_coalesce,
        }
    }

    /// Adds a viewer to a shard, under the group's lock (so that joins at once count each
    /// other), and returns the shard: the least busy one, or a new one when every shard is at
    /// its capacity and the runtime has a worker to spare. A small audience is served by one
    /// shard, inline when there is no coalescing time; a large one by one shard per worker,
    /// so that every core writes. From the viewer that takes the audience beyond the first
    /// shard's [`INLINE_VIEWERS`] on, every shard is a task gathering changes for the large
    /// audience's time (the ones running are restarted as such), however many workers run.
    fn add(&self, viewer: &Arc<Viewer>) -> Arc<Shard> {
        let mut guard = lock(&self.shards);
        let shards = &mut *guard;
        let large = self.coalesce.max(self.large_coalesce);
        if !shards.gathering && large != self.coalesce {
            let audience: usize = shards.list.iter().map(|s| s.len()).sum();
            if audience >= INLINE_VIEWERS {
                shards.gathering = true;
                for shard in &shards.list {
                    shard.restart(&self.hub, &self.name, large);
                }
            }
        }
        let coalesce = if shards.gathering {
            large
        } else {
            self.coalesce
        };
        let least = shards
            .list
            .iter()
            .map(|s| (s.len(), s))
            .min_by_key(|(len, _)| *len)
            .map(|(len, s)| (len, Arc::clone(s)));
        let shard = match least {
            Some((len, s)) if len < s.capacity() || shards.list.len() >= self.max_shards => s,
            _ => {
                let shard = if shards.list.is_empty() && coalesce.is_zero() {
                    Shard::inline(&self.hub, &self.name)
                } else {
                    Shard::start(&self.hub, &self.name, coalesce)
                };
                let shard = Arc::new(shard);
                shards.list.push(Arc::clone(&shard));
                shard
            }
        };
        shard.add(viewer);
        shard
    }
}

/// A shard's loop: at every change of the stream, visit each viewer once; with a coalescing
/// time, first let the changes of that time gather, so that each viewer's frames of that time
/// go out in one write.
async fn drive(viewers: Arc<ViewerList>, mut watch: StreamWatch, coalesce: Duration) {
    loop {
        watch.changed().await;
        if !coalesce.is_zero() {
            tokio::time::sleep(coalesce).await;
            watch.mark_seen();
        }
        let round = Arc::clone(&*lock(&viewers));
        for (i, viewer) in round.iter().enumerate() {
            viewer.serve();
            if (i + 1) % VIEWERS_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// A viewer's place in its stream's fan-out; leaving happens on drop.
#[derive(Debug)]
pub(crate) struct Membership {
    fanouts: Arc<FanOuts>,
    name: String,
    group: Option<Arc<Group>>,
    shard: Arc<Shard>,
    viewer: Arc<Viewer>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.viewer.leave();
        self.shard.remove(&self.viewer);
        // The last viewer's group stops its shards; its name is forgotten under the map's
        // lock, so that a viewer joining meanwhile starts a new group.
        let mut groups = lock(&self.fanouts.groups);
        drop(self.group.take());
        if groups
            .get(&self.name)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            groups.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use streamgate_media::{ms_to_ticks, AacConfig, Codec, Frame, TrackKind};
    use streamgate_relay::{Pick, Publisher, Unavailable, WireFormat};
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};

    fn audio(n: i64, len: usize) -> Frame {
        Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts: ms_to_ticks(n * 23),
            dts: ms_to_ticks(n * 23),
            keyframe: true,
            payload: Bytes::from(vec![0x5a; len]),
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// The shards of stream `name`'s group, which must exist.
    fn group_shards(fanouts: &FanOuts, name: &str) -> Vec<Arc<Shard>> {
        let groups = lock(&fanouts.groups);
        let group = groups.get(name).and_then(Weak::upgrade).unwrap();
        let shards = lock(&group.shards).list.clone();
        shards
    }

    /// Whether each of stream `name`'s shards is the inline one.
    fn inline_shards(fanouts: &FanOuts, name: &str) -> Vec<bool> {
        group_shards(fanouts, name)
            .iter()
            .map(|s| matches!(*lock(&s.driver), Driver::Inline(_)))
            .collect()
    }

    /// The inline driver of stream `name`'s first shard, which must be one.
    fn first_inline(fanouts: &FanOuts, name: &str) -> Weak<Inline> {
        match &*lock(&group_shards(fanouts, name)[0].driver) {
            Driver::Inline(inline) => Arc::downgrade(inline),
            Driver::Task(_) => panic!("the first shard of {name} is not inline"),
        }
    }

    /// A publisher of stream `name` and a viewer of it in `fanouts` (with its membership and
    /// the client end of its socket), past the first frame, which comes with `Started` and
    /// goes to the connection task: the viewer's shard writes the next ones.
    async fn started_viewer(
        hub: &Hub,
        fanouts: &Arc<FanOuts>,
        name: &str,
    ) -> (Publisher, Arc<Viewer>, Membership, TcpStream) {
        let publisher = hub.publish(name).unwrap();
        publisher.set_audio_config(AacConfig::new(2, 4, 2).unwrap());
        let (server, client) = pair().await;
        let (_read, write) = server.into_split();
        let viewer = Arc::new(Viewer::new(hub.subscribe(name), Arc::new(write), 1));
        let membership = fanouts.join(hub, name, Arc::clone(&viewer));
        while !matches!(viewer.take_work(8), Work::Done) {}
        publisher.push(audio(0, 100));
        tokio::time::timeout(Duration::from_secs(5), viewer.handed_off())
            .await
            .unwrap();
        assert!(matches!(
            take_events(&viewer).as_slice(),
            [Event::Started(..), Event::Frame(_)]
        ));
        while !matches!(viewer.take_work(8), Work::Done) {}
        (publisher, viewer, membership, client)
    }

    /// Frames `n` and `n + 1`, pushed 100 ms apart to a viewer whose shard gathers changes
    /// for longer: nothing is written before the time is up, then both at once.
    async fn two_frames_go_out_in_one_write(publisher: &Publisher, client: &mut TcpStream, n: i64) {
        publisher.push(audio(n, 100));
        let mut got = vec![0u8; 4096];
        let early = tokio::time::timeout(Duration::from_millis(100), client.read(&mut got)).await;
        assert!(early.is_err(), "written before the gathering time was up");
        publisher.push(audio(n + 1, 100));
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(
            read >= 2 * 100 + 2 * 12,
            "one read of both frames' chunks, got {read} bytes"
        );
    }

    fn take_events(viewer: &Viewer) -> Vec<Event> {
        match viewer.take_work(MAX_EVENTS_PER_WRITE) {
            Work::Write { unsent, events } => {
                assert!(unsent.is_empty());
                events
            }
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stalled_viewer_holds_about_a_megabyte_whatever_the_frames() {
        let hub = Hub::new();
        let publisher = hub.publish("live/big").unwrap();
        let (server, _client) = pair().await;
        let (_read, write) = server.into_split();
        let viewer = Viewer::new(hub.subscribe("live/big"), Arc::new(write), 1);
        for n in 0..40 {
            publisher.push(audio(n, 400_000));
        }
        // The task's share: at most a megabyte of frames (plus the one that crosses it).
        let Work::Write { events, .. } = viewer.take_work(MAX_EVENTS_PER_WRITE) else {
            panic!("expected events");
        };
        let frames = events
            .iter()
            .filter(|e| matches!(e, Event::Frame(_)))
            .count();
        assert_eq!(frames, 3, "{} events", events.len());
        // The shard's share of a socket that takes nothing more than its buffer is as small:
        // what it could not write is all it holds.
        while !matches!(viewer.take_work(MAX_EVENTS_PER_WRITE), Work::Done) {}
        for n in 40..80 {
            publisher.push(audio(n, 400_000));
        }
        viewer.serve();
        let held: usize = lock(&viewer.state).unsent.iter().map(Bytes::len).sum();
        assert!(held <= MAX_BYTES_PER_WRITE + 400_100, "{held} bytes held");
    }

    #[tokio::test]
    async fn shard_writes_frames_and_hands_over_started_ended_and_full_sockets() {
        let hub = Hub::new();
        let publisher = hub.publish("live/t").unwrap();
        publisher.set_audio_config(AacConfig::new(2, 4, 2).unwrap());
        let (server, mut client) = pair().await;
        let (_read, write) = server.into_split();
        let viewer = Viewer::new(hub.subscribe("live/t"), Arc::new(write), 1);

        // A new viewer starts in Task mode: the shard leaves it alone.
        publisher.push(audio(0, 100));
        viewer.serve();
        let events = take_events(&viewer);
        assert!(matches!(
            events.as_slice(),
            [Event::Started(..), Event::Frame(_)]
        ));
        assert!(matches!(viewer.take_work(8), Work::Done), "back to Fast");

        // Fast: the shard writes the frame itself.
        publisher.push(audio(1, 100));
        viewer.serve();
        let mut got = vec![0u8; 200];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 100, "one audio message of chunks");
        assert!(!viewer.handoff.raised.load(Ordering::SeqCst));

        // A socket that stops taking bytes: the shard leaves the rest and hands over.
        let mut n = 2;
        while !viewer.handoff.raised.load(Ordering::SeqCst) {
            publisher.push(audio(n, 60_000));
            viewer.serve();
            n += 1;
            assert!(n < 10_000, "the socket never filled");
        }
        match viewer.take_work(MAX_EVENTS_PER_WRITE) {
            Work::Write { unsent, .. } => assert!(!unsent.is_empty(), "bytes left to write"),
            other => panic!("expected unsent bytes, got {other:?}"),
        }
        publisher.push(audio(n, 10));
        viewer.serve();
        assert!(
            matches!(viewer.take_work(MAX_EVENTS_PER_WRITE), Work::Write { .. }),
            "the shard does not write while the task holds the cell"
        );

        // Ended goes to the task too.
        while !matches!(viewer.take_work(MAX_EVENTS_PER_WRITE), Work::Done) {}
        drop(publisher);
        viewer.serve();
        assert!(viewer.handoff.raised.load(Ordering::SeqCst));
        assert!(matches!(take_events(&viewer).as_slice(), [Event::Ended]));
    }

    #[tokio::test]
    async fn a_stream_turning_to_vp8_goes_to_the_connection_task_without_its_frames() {
        let hub = Hub::new();
        let publisher = hub.publish("live/v").unwrap();
        let (server, _client) = pair().await;
        let (_read, write) = server.into_split();
        let viewer = Viewer::new(
            hub.subscribe_as("live/v", Some(WireFormat::Rtmp)),
            Arc::new(write),
            1,
        );
        publisher.push(audio(0, 10));
        while !matches!(viewer.take_work(8), Work::Done) {}

        publisher.push(Frame {
            track: TrackKind::Video,
            codec: Codec::Vp8,
            pts: 0,
            dts: 0,
            keyframe: true,
            payload: Bytes::from_static(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]),
        });
        viewer.serve();
        assert!(viewer.handoff.raised.load(Ordering::SeqCst));
        match take_events(&viewer).as_slice() {
            [Event::Started(_, selection)] => assert_eq!(
                selection.video,
                Pick::Unavailable(Unavailable::NotCarried(Codec::Vp8))
            ),
            other => panic!("expected the new selection, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_shard_starts_only_for_a_large_audience() {
        let hub = Hub::new();
        let fanouts = Arc::new(FanOuts::default());
        let (server, _client) = pair().await;
        let (_read, write) = server.into_split();
        let write = Arc::new(write);
        let shards = |fanouts: &FanOuts| -> Vec<usize> {
            group_shards(fanouts, "live/s")
                .iter()
                .map(|s| s.len())
                .collect()
        };
        let mut members: Vec<Membership> = (0..INLINE_VIEWERS)
            .map(|_| {
                let viewer = Viewer::new(hub.subscribe("live/s"), Arc::clone(&write), 1);
                fanouts.join(&hub, "live/s", Arc::new(viewer))
            })
            .collect();
        assert_eq!(shards(&fanouts), vec![INLINE_VIEWERS]);
        for _ in 0..3 {
            let viewer = Viewer::new(hub.subscribe("live/s"), Arc::clone(&write), 1);
            members.push(fanouts.join(&hub, "live/s", Arc::new(viewer)));
        }
        assert_eq!(
            shards(&fanouts),
            vec![INLINE_VIEWERS, 3],
            "a shard task, then the least busy one"
        );
        assert_eq!(
            inline_shards(&fanouts, "live/s"),
            [true, false],
            "the first shard inline, the next a task"
        );
        // Two workers: never a third shard.
        for _ in 0..INLINE_VIEWERS {
            let viewer = Viewer::new(hub.subscribe("live/s"), Arc::clone(&write), 1);
            members.push(fanouts.join(&hub, "live/s", Arc::new(viewer)));
        }
        assert_eq!(shards(&fanouts).len(), 2);
        members.truncate(1);
        assert_eq!(shards(&fanouts).iter().sum::<usize>(), 1);
        members.clear();
        assert!(lock(&fanouts.groups).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_within_the_coalescing_time_go_out_in_one_write() {
        let hub = Hub::new();
        let fanouts = Arc::new(FanOuts::new(Duration::from_millis(300), Duration::ZERO));
        let (publisher, _viewer, _membership, mut client) =
            started_viewer(&hub, &fanouts, "live/c").await;
        two_frames_go_out_in_one_write(&publisher, &mut client, 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_audience_outgrowing_the_inline_shard_has_its_frames_gathered() {
        let hub = Hub::new();
        let fanouts = Arc::new(FanOuts::new(Duration::ZERO, Duration::from_millis(600)));
        let (publisher, _viewer, _membership, mut client) =
            started_viewer(&hub, &fanouts, "live/l").await;
        assert_eq!(inline_shards(&fanouts, "live/l"), [true]);
        let inline = first_inline(&fanouts, "live/l");

        // A small audience: written within the push.
        publisher.push(audio(1, 100));
        let mut got = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(n >= 100, "{n} bytes");

        // The 1,025th viewer (the others stay with their connection tasks, which this test
        // does not run): every shard is a task that gathers.
        let (other, _other_client) = pair().await;
        let (_other_read, other_write) = other.into_split();
        let other_write = Arc::new(other_write);
        let members: Vec<Membership> = (0..INLINE_VIEWERS)
            .map(|_| {
                let v = Viewer::new(hub.subscribe("live/l"), Arc::clone(&other_write), 1);
                fanouts.join(&hub, "live/l", Arc::new(v))
            })
            .collect();
        assert_eq!(inline_shards(&fanouts, "live/l"), [false, false]);
        assert!(
            inline.upgrade().is_none(),
            "the inline shard's waker is no longer parked in the relay"
        );

        // The first viewer, still in the first shard, now gets two frames 100 ms apart in one
        // write after the gathering time, and nothing before.
        two_frames_go_out_in_one_write(&publisher, &mut client, 2).await;
        drop(members);
        assert_eq!(group_shards(&fanouts, "live/l").len(), 2);
    }

    /// With one worker there is never a second shard, but a large audience is gathered all
    /// the same.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_audience_on_one_worker_is_gathered_too() {
        let hub = Hub::new();
        let fanouts = Arc::new(FanOuts::new(Duration::ZERO, Duration::from_millis(40)));
        let (server, _client) = pair().await;
        let (_read, write) = server.into_split();
        let write = Arc::new(write);
        let mut members = Vec::new();
        for n in 0..=INLINE_VIEWERS {
            let viewer = Viewer::new(hub.subscribe("live/o"), Arc::clone(&write), 1);
            members.push(fanouts.join(&hub, "live/o", Arc::new(viewer)));
            let inline = n < INLINE_VIEWERS;
            assert_eq!(inline_shards(&fanouts, "live/o"), [inline], "viewer {n}");
        }
        // Below the mark again: still gathered, until the group ends.
        members.truncate(10);
        let viewer = Viewer::new(hub.subscribe("live/o"), Arc::clone(&write), 1);
        members.push(fanouts.join(&hub, "live/o", Arc::new(viewer)));
        assert_eq!(inline_shards(&fanouts, "live/o"), [false]);
        // The next group of the name starts small again.
        members.clear();
        let viewer = Viewer::new(hub.subscribe("live/o"), Arc::clone(&write), 1);
        members.push(fanouts.join(&hub, "live/o", Arc::new(viewer)));
        assert_eq!(inline_shards(&fanouts, "live/o"), [true]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_start_with_the_first_viewer_and_stop_with_the_last() {
        let hub = Hub::new();
        let fanouts = Arc::new(FanOuts::default());
        // The first frame comes with Started: handed to the connection task.
        let (publisher, viewer, membership, mut client) =
            started_viewer(&hub, &fanouts, "live/g").await;
        assert_eq!(lock(&fanouts.groups).len(), 1);

        // The next one the shard, woken by the push, writes without the connection task.
        publisher.push(audio(1, 100));
        let mut got = vec![0u8; 200];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);

        // A small audience without coalescing is served inline.
        let inline = first_inline(&fanouts, "live/g");
        drop(membership);
        assert!(lock(&fanouts.groups).is_empty());
        assert!(
            inline.upgrade().is_none(),
            "the stopped shard's waker is no longer parked in the relay"
        );
        assert!(
            matches!(viewer.take_work(8), Work::Done),
            "left: no subscriber"
        );
        assert_eq!(hub.stream_stats("live/g").map(|s| s.subscribers), Some(0));
    }

    /// The inline shard writes during the push itself: on a runtime with one thread, where
    /// no other task can run before the test's next await, the frame is already in the
    /// socket when `push` returns.
    #[tokio::test(flavor = "current_thread")]
    async fn the_inline_shard_writes_within_the_push() {
        let hub = Hub::new();
        let fanouts = Arc::new(FanOuts::default());
        let publisher = hub.publish("live/i").unwrap();
        publisher.set_audio_config(AacConfig::new(2, 4, 2).unwrap());
        let (server, client) = pair().await;
        let (_read, write) = server.into_split();
        let viewer = Arc::new(Viewer::new(hub.subscribe("live/i"), Arc::new(write), 1));
        let _membership = fanouts.join(&hub, "live/i", Arc::clone(&viewer));
        while !matches!(viewer.take_work(8), Work::Done) {}
        publisher.push(audio(0, 100));
        assert!(matches!(
            take_events(&viewer).as_slice(),
            [Event::Started(..), Event::Frame(_)]
        ));
        while !matches!(viewer.take_work(8), Work::Done) {}

        let client = client.into_std().unwrap();
        client.set_nonblocking(true).unwrap();
        let mut got = vec![0u8; 4096];
        assert!(
            std::io::Read::read(&mut &client, &mut got).is_err(),
            "nothing written yet"
        );
        publisher.push(audio(1, 100));
        publisher.push(audio(2, 100));
        // Loopback delivers within the send call.
        let n = std::io::Read::read(&mut &client, &mut got).unwrap();
        assert!(
            n >= 2 * 100,
            "both frames written by the pushes, got {n} bytes"
        );
    }
}

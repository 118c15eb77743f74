//! A connection task that wakes itself is polled again at once, not rescheduled.
//!
//! hyper's HTTP/1 server hands a request body to the handler through a channel whose sender
//! is the connection's own dispatcher, running in the same task as the handler. When the
//! handler takes the body's chunk, the channel wakes the sender, which is the task that is
//! polling right then. tokio treats a task woken during its own poll as one that yielded:
//! it goes to the back of the run queue and a parked worker is woken to take it. Every
//! request with a body paid a futex wake and a second worker spinning up for nothing:
//! 8 µs of CPU per request at one connection on the 2-core bench machine, a third of
//! Trestle's latency over the bare proxy (BENCHMARKS.md, "Performance (issue 16)").
//!
//! [`Repoll`] polls the inner future with a waker of its own. A wake that arrives while the
//! inner future is being polled only marks it for another pass, which runs before `poll`
//! returns. A wake at any other time goes to the task's waker as usual. Passes are bounded
//! ([`PASSES`]), so a future that keeps waking itself (tokio's cooperative budget does, on
//! purpose) still yields to the scheduler. See docs/architecture.md ("Hot path").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// How many times one `poll` may run the inner future before yielding for real.
pub const PASSES: usize = 4;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

struct Shared {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // During a pass: ask for another. Otherwise: wake the task.
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

/// Runs `inner`, absorbing the wakes it gives itself while it is being polled.
pub struct Repoll<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    waker: Waker,
}

impl<F: Future> Repoll<F> {
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        Repoll {
            inner: Box::pin(inner),
            waker: Waker::from(shared.clone()),
            shared,
        }
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..PASSES {
            this.shared.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                this.shared.state.store(IDLE, Ordering::Release);
                return Poll::Ready(out);
            }
            // No wake during the pass: done until one comes. A wake from another thread
            // after this exchange finds IDLE and wakes the task.
            if this
                .shared
                .state
                .compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Poll::Pending;
            }
        }
        // Still waking itself after every pass: yield to the scheduler, woken.
        this.shared.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A future that is polled only after it has woken itself: in between, polling it costs a
/// few atomic operations (the task waker's registration, two compare-and-swaps when it is the
/// same waker, and a swap of the flag). Once it has returned `Ready` it stays pending. For the stop signals a long-lived task waits on beside its work (a
/// stream's route deadline and the shutdown signal, a connection's graceful-shutdown signal):
/// polled directly, they cost a lock (`CancellationToken`'s, a `Notify`'s waiter list) and a
/// timer check at every wake of the task, once or twice per streamed chunk.
pub struct OnWake<F> {
    inner: F,
    shared: Arc<Woken>,
    waker: Waker,
    /// Polled once: its wakes go to `waker` from then on.
    armed: bool,
    /// It returned `Ready`: never polled again.
    done: bool,
}

struct Woken {
    woken: std::sync::atomic::AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> OnWake<F> {
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Woken {
            woken: std::sync::atomic::AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        OnWake {
            inner,
            waker: Waker::from(shared.clone()),
            shared,
            armed: false,
            done: false,
        }
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Pending;
        }
        // The task's waker first: a wake after the check below still reaches the task.
        this.shared.task.register(cx.waker());
        if this.armed && !this.shared.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.armed = true;
        let out = Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker));
        this.done = out.is_ready();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    /// Wakes itself `times` times, then is ready; counts its polls.
    fn self_waking(times: usize, polls: Arc<AtomicUsize>) -> impl Future<Output = ()> {
        let mut left = times;
        std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            if left == 0 {
                return Poll::Ready(());
            }
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    #[test]
    fn wakes_during_a_poll_run_another_pass_without_waking_the_task() {
        let (count, waker) = counting();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = std::pin::pin!(Repoll::new(self_waking(PASSES - 1, polls.clone())));
        let ready = fut.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(ready.is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), PASSES);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "the task was never woken"
        );
    }

    #[test]
    fn a_future_that_keeps_waking_itself_still_yields() {
        let (count, waker) = counting();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = std::pin::pin!(Repoll::new(self_waking(usize::MAX, polls.clone())));
        let out = fut.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(out.is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), PASSES);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "yielded with a wake");
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let (count, waker) = counting();
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut fut = std::pin::pin!(Repoll::new(rx));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        std::thread::spawn(move || tx.send(7))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(7)) => {}
            other => panic!("expected the value, got {other:?}"),
        }
    }

    /// Wakes from other threads racing the passes are never lost: thousands of ping-pongs
    /// between tasks on a multi-thread runtime all finish.
    #[test]
    fn no_wake_is_lost_across_threads() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let rounds = 2_000;
            let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u32>(1);
            let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u32>(1);
            let echo = tokio::spawn(Repoll::new(async move {
                while let Some(n) = ping_rx.recv().await {
                    if pong_tx.send(n).await.is_err() {
                        break;
                    }
                }
            }));
            let driver = tokio::spawn(Repoll::new(async move {
                for n in 0..rounds {
                    ping_tx.send(n).await.unwrap();
                    assert_eq!(pong_rx.recv().await, Some(n));
                }
            }));
            tokio::time::timeout(Duration::from_secs(30), driver)
                .await
                .expect("a wake was lost")
                .unwrap();
            echo.await.unwrap();
        });
    }

    /// Counts its polls; ready once `open` is set (and woken by whoever sets it).
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<std::sync::atomic::AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn on_wake_polls_the_inner_future_only_after_it_woke() {
        let (count, waker) = counting();
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut fut = OnWake::new(Gate {
            polls: polls.clone(),
            open: open.clone(),
            waker: inner_waker.clone(),
        });
        let mut cx = Context::from_waker(&waker);
        for _ in 0..5 {
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once to arm it");
        // Opened from another thread: the inner wake reaches the task, and the next poll
        // polls the inner future again.
        let (o, w) = (open.clone(), inner_waker.clone());
        std::thread::spawn(move || {
            o.store(true, Ordering::SeqCst);
            w.lock().unwrap().take().unwrap().wake();
        })
        .join()
        .unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // Done: a later wake does not poll the finished future again.
        fut.waker.wake_by_ref();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    /// A stream's stop signals behind `OnWake` still stop it: a timer and a cancellation.
    #[tokio::test]
    async fn on_wake_passes_timers_and_cancellations_through() {
        let sleep = OnWake::new(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("the timer fired through OnWake");
        let token = tokio_util::sync::CancellationToken::new();
        let cancelled = OnWake::new(Box::pin(token.clone().cancelled_owned()));
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            t.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), cancelled)
            .await
            .expect("the cancellation came through OnWake");
    }
}

//! Work shared between the caller's thread and helpers, delivered in order.
//!
//! The file pipelines ([`super::seal`], [`super::open`]) read and write on
//! the caller's thread, because their input and output need not be `Send`
//! (standard input and output locks are not), and seal
//! or open pieces of a few chunks on every core. A fixed split (the caller
//! does I/O, other threads do cryptography) leaves a core idle on a
//! 2-core machine: I/O is about a third of the work, cryptography two
//! thirds. So the caller also does cryptography: when the helpers' queue
//! is full it works on the piece it just read itself. Measured on this
//! 2-core machine, encrypting 64 MiB in memory (criterion, one run): a
//! sealing thread beside the caller reached 2.47 GiB/s, two sealing
//! threads (three busy threads on two cores) 2.23 GiB/s, and the caller
//! sharing the work with one helper 3.47 GiB/s. Pieces of 512 KiB did
//! best in one run of 128 KiB to 1 MiB (3.36, 3.49, 3.62, 3.23 GiB/s):
//! finer sharing, and fewer fresh buffer pages per file.
//!
//! **Invariant: results reach [`Stage::done`] in the order
//! [`Stage::next`] produced their jobs, each exactly once,** whichever
//! thread did the work; a failed job's error is returned at its turn, so
//! the error reported does not depend on timing. Jobs in flight are
//! bounded, and so is the memory they hold.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::sync::mpsc::{self, TrySendError};

use crate::{Error, Result};

/// The caller's side of the pipeline: makes jobs and takes their results.
pub(crate) trait Stage {
    /// A piece of work, moved to whichever thread does it.
    type Job: Send;
    /// What the work gives back.
    type Done: Send;
    /// The next job, or `None` once there is no more.
    fn next(&mut self) -> Result<Option<Self::Job>>;
    /// One job's result, in job order.
    fn done(&mut self, done: Self::Done) -> Result<()>;
}

/// Results that arrived out of order, until their turn.
struct InOrder<D> {
    waiting: BTreeMap<u64, Result<D>>,
    next: u64,
}

impl<D> InOrder<D> {
    /// Hands every result whose turn has come to `stage`.
    fn deliver<S: Stage<Done = D>>(&mut self, stage: &mut S) -> Result<()> {
        while let Some(result) = self.waiting.remove(&self.next) {
            self.next += 1;
            stage.done(result?)?;
        }
        Ok(())
    }
}

/// Runs `work` on every job `stage` produces, on the caller's thread and
/// `helpers` more, and hands the results back in order (see the module
/// docs). With no helpers everything runs on the caller's thread.
pub(crate) fn run<S, F>(stage: &mut S, helpers: usize, work: F) -> Result<()>
where
    S: Stage,
    F: Fn(S::Job) -> Result<S::Done> + Sync,
{
    if helpers == 0 {
        while let Some(job) = stage.next()? {
            stage.done(work(job)?)?;
        }
        return Ok(());
    }
    let (to_helpers, jobs) = mpsc::sync_channel::<(u64, S::Job)>(helpers);
    let jobs = Mutex::new(jobs);
    let (to_caller, results) = mpsc::channel::<(u64, Result<S::Done>)>();
    std::thread::scope(|scope| {
        for _ in 0..helpers {
            let (jobs, to_caller, work) = (&jobs, to_caller.clone(), &work);
            scope.spawn(move || {
                loop {
                    // Poisoned only if another helper panicked: stop too.
                    let Ok(Ok((seq, job))) = jobs.lock().map(|jobs| jobs.recv()) else {
                        return;
                    };
                    // A panic would leave the caller waiting for this
                    // job forever: it becomes the job's error instead.
                    let result = panic::catch_unwind(AssertUnwindSafe(|| work(job)))
                        .unwrap_or(Err(Error::Crypto("a worker thread panicked")));
                    if to_caller.send((seq, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(to_caller);
        let outcome = drive(stage, helpers, &work, &to_helpers, &results);
        // Ends the helpers' loops (on error too) before the scope joins them.
        drop(to_helpers);
        outcome
    })
}

/// The caller's loop: produce, hand off or work, deliver in order.
fn drive<S, F>(
    stage: &mut S,
    helpers: usize,
    work: &F,
    to_helpers: &mpsc::SyncSender<(u64, S::Job)>,
    results: &mpsc::Receiver<(u64, Result<S::Done>)>,
) -> Result<()>
where
    S: Stage,
    F: Fn(S::Job) -> Result<S::Done>,
{
    let stopped = || Error::Crypto("a worker thread stopped");
    let mut order = InOrder {
        waiting: BTreeMap::new(),
        next: 0,
    };
    // Enough for every helper to hold one and have one queued, and the
    // caller one of its own ahead.
    let most_in_flight = 2 * helpers as u64 + 2;
    let mut produced = 0u64;
    loop {
        while let Ok((seq, result)) = results.try_recv() {
            order.waiting.insert(seq, result);
        }
        order.deliver(stage)?;
        if produced - order.next >= most_in_flight {
            let (seq, result) = results.recv().map_err(|_| stopped())?;
            order.waiting.insert(seq, result);
            continue;
        }
        let Some(job) = stage.next()? else { break };
        let seq = produced;
        produced += 1;
        match to_helpers.try_send((seq, job)) {
            Ok(()) => {}
            Err(TrySendError::Full((seq, job))) => {
                order.waiting.insert(seq, work(job));
            }
            Err(TrySendError::Disconnected(_)) => return Err(stopped()),
        }
    }
    while order.next < produced {
        order.deliver(stage)?;
        if order.next == produced {
            break;
        }
        let (seq, result) = results.recv().map_err(|_| stopped())?;
        order.waiting.insert(seq, result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produces `count` numbers; work squares them, slowly for some, and
    /// fails on `fail_at`; `done` records what arrives.
    struct Squares {
        count: u64,
        made: u64,
        got: Vec<u64>,
    }

    impl Stage for Squares {
        type Job = u64;
        type Done = u64;
        fn next(&mut self) -> Result<Option<u64>> {
            if self.made == self.count {
                return Ok(None);
            }
            self.made += 1;
            Ok(Some(self.made - 1))
        }
        fn done(&mut self, done: u64) -> Result<()> {
            self.got.push(done);
            Ok(())
        }
    }

    fn square_slowly(fail_at: Option<u64>) -> impl Fn(u64) -> Result<u64> + Sync {
        move |n| {
            if n % 7 == 3 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            if Some(n) == fail_at {
                return Err(Error::ChunkAuth { index: n });
            }
            Ok(n * n)
        }
    }

    #[test]
    fn results_arrive_in_order_once_each_on_any_number_of_helpers() {
        for helpers in [0, 1, 2, 5] {
            let mut stage = Squares {
                count: 200,
                made: 0,
                got: Vec::new(),
            };
            run(&mut stage, helpers, square_slowly(None)).unwrap();
            let expected: Vec<u64> = (0..200).map(|n| n * n).collect();
            assert_eq!(stage.got, expected, "{helpers} helpers");
        }
    }

    #[test]
    fn a_failed_job_stops_delivery_at_its_turn_with_its_own_error() {
        for helpers in [0, 1, 3] {
            let mut stage = Squares {
                count: 100,
                made: 0,
                got: Vec::new(),
            };
            let err = run(&mut stage, helpers, square_slowly(Some(40))).unwrap_err();
            assert!(matches!(err, Error::ChunkAuth { index: 40 }), "{err}");
            let expected: Vec<u64> = (0..40).map(|n| n * n).collect();
            assert_eq!(stage.got, expected, "{helpers} helpers");
        }
    }
}

//! When and to which server the client (re)connects, without I/O: the
//! back-off between rounds, the choice among the addresses tried at once,
//! and what a failed round tells callers (`fail_fast`).
//!
//! The connection manager (`manager.rs`) opens the connections and sleeps;
//! every decision it makes comes from here.

use std::time::Duration;

use crate::error::Error;

/// The least delay between connection rounds, whatever is configured: a
/// zero `min_disconnect_poll` must not spin.
pub(crate) const MIN_POLL: Duration = Duration::from_millis(10);

/// The delay between connection rounds: `min` after a success, doubling
/// after each failure up to `max`, each wait made up to a quarter longer
/// so that the many clients of a restarted server do not reconnect in
/// lockstep.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    delay: Duration,
}

impl Backoff {
    /// From `min_disconnect_poll` and `max_disconnect_poll`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(MIN_POLL);
        let max = max.max(min);
        Backoff {
            min,
            max,
            delay: min,
        }
    }

    /// A round succeeded: the next wait is the shortest again.
    pub fn reset(&mut self) {
        self.delay = self.min;
    }

    /// The delay the next wait is based on (before jitter).
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// How long to wait now, jittered by `random`; the delay after it
    /// doubles.
    pub fn next_wait(&mut self, random: u64) -> Duration {
        let wait = jitter(self.delay, random);
        self.grow();
        wait
    }

    /// Doubles the delay, up to the maximum.
    pub fn grow(&mut self) {
        self.delay = (self.delay * 2).min(self.max);
    }
}

/// `d` made up to a quarter longer, by `random`.
pub(crate) fn jitter(d: Duration, random: u64) -> Duration {
    let frac = (random % 1000) as f64 / 4000.0;
    d.mul_f64(1.0 + frac)
}

/// A connection as the round sees it.
pub(crate) trait Candidate {
    /// Whether the server registered it read-only.
    fn read_only(&self) -> bool;
}

/// How the latest failed round went, for callers waiting on a connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct FailedRound {
    /// `address: error` for each address tried.
    pub errors: Vec<String>,
    /// Whether every address refused the connection: what `fail_fast`
    /// gives up on.
    pub all_refused: bool,
    /// When every address failed its TLS handshake: the first failure,
    /// which ends a wait for a connection at once (the same handshake
    /// would fail until the wait's timeout).
    pub tls_failure: Option<(String, zeo_tls::FailureReason)>,
}

/// What to do after an attempt of a round finished.
#[derive(Debug)]
pub(crate) enum Step<C> {
    /// Keep waiting for the other attempts, after closing `close`.
    Continue { close: Option<C> },
    /// The round is won: stop the other attempts and finish; close `close`.
    Won { close: Option<C> },
}

/// One connection round: every address is tried at once, and the first
/// writable registration wins (or a read-only one, when that is all there
/// is and read-only is acceptable).
#[derive(Debug)]
pub(crate) struct Round<C> {
    /// Only a writable server will do (probing for one while connected to
    /// a read-only fallback).
    writable_only: bool,
    /// The client itself is read-only: any server is as good.
    read_only_client: bool,
    chosen: Option<C>,
    errors: Vec<String>,
    last_error: Option<Error>,
    all_refused: bool,
    tls_failures: Vec<(String, zeo_tls::FailureReason)>,
}

impl<C: Candidate> Round<C> {
    /// A round for a client that is `read_only_client`, looking only for
    /// writable servers when `writable_only`.
    pub fn new(read_only_client: bool, writable_only: bool) -> Self {
        Round {
            writable_only,
            read_only_client,
            chosen: None,
            errors: Vec::new(),
            last_error: None,
            all_refused: true,
            tls_failures: Vec::new(),
        }
    }

    /// An attempt registered `conn`.
    pub fn connected(&mut self, conn: C) -> Step<C> {
        if !conn.read_only() || self.read_only_client {
            let close = self.chosen.replace(conn);
            return Step::Won { close };
        }
        if self.writable_only || self.chosen.is_some() {
            Step::Continue { close: Some(conn) }
        } else {
            self.chosen = Some(conn);
            Step::Continue { close: None }
        }
    }

    /// An attempt failed with `error`; `refused` when nothing listens at
    /// its address.
    pub fn failed(&mut self, error: Error, refused: bool) {
        self.all_refused &= refused;
        if let Error::Tls { address, reason } = &error {
            self.tls_failures.push((address.clone(), reason.clone()));
        }
        self.errors.push(match &error {
            // Already `address: reason`.
            Error::Disconnected(m) => m.clone(),
            other => other.to_string(),
        });
        self.last_error = Some(error);
    }

    /// An attempt's task died (panicked or was cancelled).
    pub fn lost(&mut self, reason: impl std::fmt::Display) {
        let error = Error::Disconnected(format!("connection attempt failed: {reason}"));
        self.all_refused = false;
        self.errors.push(error.to_string());
        self.last_error = Some(error);
    }

    /// The round's connection.
    ///
    /// # Errors
    ///
    /// Without one, the error to log (naming every reason when several
    /// addresses failed) and the [`FailedRound`] to publish; for a
    /// `writable_only` round that only found a read-only server, that
    /// connection to close beside the error.
    // Built once per failed connection round: its size does not matter.
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    pub fn finish(self) -> Result<C, (Error, Option<FailedRound>, Option<C>)> {
        match self.chosen {
            Some(conn) if self.writable_only && conn.read_only() => Err((
                Error::Disconnected("no writable server".into()),
                None,
                Some(conn),
            )),
            Some(conn) => Ok(conn),
            None => {
                let error = if self.errors.len() > 1 {
                    Error::Disconnected(self.errors.join("; "))
                } else {
                    self.last_error
                        .unwrap_or_else(|| Error::Disconnected("no server address".into()))
                };
                let every_tls = self.tls_failures.len() == self.errors.len();
                let failed = FailedRound {
                    errors: self.errors,
                    all_refused: self.all_refused,
                    tls_failure: self.tls_failures.into_iter().next().filter(|_| every_tls),
                };
                Err((error, Some(failed), None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Fake {
        name: &'static str,
        read_only: bool,
    }

    impl Candidate for Fake {
        fn read_only(&self) -> bool {
            self.read_only
        }
    }

    fn rw(name: &'static str) -> Fake {
        Fake {
            name,
            read_only: false,
        }
    }

    fn ro(name: &'static str) -> Fake {
        Fake {
            name,
            read_only: true,
        }
    }

    /// The waits of a client that keeps failing, on a simulated clock:
    /// doubling from the minimum to the maximum, never more than a quarter
    /// over, and back to the minimum after a success.
    #[test]
    fn back_off_doubles_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let mut clock = Duration::ZERO;
        let mut waits = Vec::new();
        for attempt in 0..6u64 {
            let base = backoff.delay();
            let wait = backoff.next_wait(attempt * 337);
            assert!(wait >= base && wait <= base.mul_f64(1.25), "{wait:?}");
            clock += wait;
            waits.push(base.as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert!(clock >= Duration::from_secs(35) && clock <= Duration::from_secs(44));
        backoff.reset();
        assert_eq!(backoff.next_wait(0), Duration::from_secs(1));
    }

    #[test]
    fn a_zero_poll_still_waits_and_max_is_at_least_min() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.next_wait(0), MIN_POLL);
        assert_eq!(backoff.next_wait(0), MIN_POLL);
        assert_eq!(
            jitter(Duration::from_secs(4), 999),
            Duration::from_secs(4).mul_f64(1.24975)
        );
    }

    #[test]
    fn the_first_writable_server_wins() {
        let mut round = Round::new(false, false);
        assert!(matches!(
            round.connected(ro("a")),
            Step::Continue { close: None }
        ));
        // A second read-only one is not needed.
        assert!(matches!(
            round.connected(ro("b")),
            Step::Continue {
                close: Some(Fake { name: "b", .. })
            }
        ));
        // The writable one wins; the read-only fallback is let go.
        assert!(matches!(
            round.connected(rw("c")),
            Step::Won {
                close: Some(Fake { name: "a", .. })
            }
        ));
        assert_eq!(round.finish().unwrap(), rw("c"));
    }

    #[test]
    fn a_read_only_fallback_is_kept_when_nothing_better_answers() {
        let mut round = Round::new(false, false);
        round.failed(Error::Disconnected("x:1: refused".into()), true);
        assert!(matches!(
            round.connected(ro("a")),
            Step::Continue { close: None }
        ));
        assert_eq!(round.finish().unwrap(), ro("a"));
        // A read-only client takes the first server.
        let mut round = Round::new(true, false);
        assert!(matches!(
            round.connected(ro("a")),
            Step::Won { close: None }
        ));
    }

    #[test]
    fn probing_for_a_writable_server_refuses_read_only_ones() {
        let mut round = Round::new(false, true);
        assert!(matches!(
            round.connected(ro("a")),
            Step::Continue { close: Some(_) }
        ));
        let (err, failed, close) = round.finish().unwrap_err();
        assert!(close.is_none());
        assert!(failed.is_some(), "{err}");
    }

    #[test]
    fn a_failed_round_names_every_reason_and_whether_all_refused() {
        let mut round: Round<Fake> = Round::new(false, false);
        round.failed(Error::Disconnected("a:1: refused".into()), true);
        round.failed(Error::Disconnected("b:2: refused".into()), true);
        let (err, failed, _) = round.finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            Error::Disconnected("a:1: refused; b:2: refused".into()).to_string()
        );
        let failed = failed.unwrap();
        assert!(failed.all_refused);
        assert_eq!(failed.errors.len(), 2);
        // One address that timed out instead: not all refused, its own error.
        let mut round: Round<Fake> = Round::new(false, false);
        round.failed(Error::Auth("denied".into()), false);
        let (err, failed, _) = round.finish().unwrap_err();
        assert!(matches!(err, Error::Auth(_)));
        assert!(!failed.unwrap().all_refused);
    }

    #[test]
    fn a_lost_attempt_is_not_a_refusal() {
        let mut round: Round<Fake> = Round::new(false, false);
        round.failed(Error::Disconnected("a:1: refused".into()), true);
        round.lost("task panicked");
        let (err, failed, _) = round.finish().unwrap_err();
        assert!(
            err.to_string()
                .contains("connection attempt failed: task panicked"),
            "{err}"
        );
        assert!(!failed.unwrap().all_refused);
    }
}

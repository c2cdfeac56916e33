//! The rules of one client session, without I/O.
//!
//! A connection feeds its [`Session`] what happened (a login call, a
//! request, the commit lock granted, a vote's outcome, the time) and gets
//! back what to do (answer, close, run a storage call, wait for the lock).
//! Nothing here awaits, touches a socket or reads a clock: time comes in as
//! an [`Instant`] argument, so every rule can be tested on a simulated clock
//! without a runtime. `connection.rs` moves the bytes and runs the storage
//! calls.
//!
//! The session holds where its transaction stands as one [`Phase`]: a
//! waiting vote without a transaction, or a held commit lock outside a
//! vote, cannot be represented. Every way a transaction ends (finish,
//! abort, a failed vote, disconnect, timeout) goes through [`Session::end`].
//!
//! The session is generic over the commit lock guard `L` and the pending
//! lock wait `W` so that its tests need neither a storage nor a runtime.

use std::time::{Duration, Instant};

use zeo_auth::Challenge;
use zeo_pickle::Value;
use zeo_protocol::{LoginMethod, TxnId, WireError};
use zeo_storage::{Oid, TxnHandle};

use crate::commit::OpenTxn;

/// How long a session that holds the commit lock may go on after shutdown
/// began, so that a commit between vote and finish can complete.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where a connection stands with authentication.
#[derive(Debug)]
pub(crate) enum Auth {
    /// The server does not require it.
    Off,
    /// Required and not done yet; the challenge issued last, if any.
    Pending(Option<Challenge>),
    /// Done: every frame in both directions carries a MAC.
    Done,
}

/// The commit lock while this session holds it.
#[derive(Debug)]
pub(crate) struct Held<L> {
    /// Holding it holds the lock; dropping it hands the lock on.
    pub(crate) guard: L,
    /// When it was granted: the transaction timeout runs from here.
    pub(crate) since: Instant,
}

/// Where the session's transaction stands.
#[derive(Debug)]
pub(crate) enum Phase<L, W> {
    /// No transaction.
    Idle,
    /// Between `tpc_begin` and `vote`: writes are logged.
    Open(Box<OpenTxn>),
    /// `vote` came while another connection held the commit lock; its reply
    /// waits for the lock.
    AwaitingLock {
        /// The transaction to vote.
        txn: Box<OpenTxn>,
        /// The place in the lock's queue.
        wait: W,
        /// The vote call to answer.
        msgid: Value,
    },
    /// The storage is replaying the log under the lock; the transaction
    /// and the lock are with that call until [`Session::voted`],
    /// [`Session::conflicted`] or [`Session::end`].
    Voting(TxnId),
    /// The storage voted yes; the lock is held until finish or abort.
    Voted {
        /// The transaction, its storage transaction begun.
        txn: Box<OpenTxn>,
        /// The commit lock.
        lock: Held<L>,
    },
    /// The vote reported conflicts: the client resolves them, stores again
    /// and votes again, while this session keeps the lock. Its resolutions
    /// are then checked against a state no other commit can move meanwhile;
    /// letting go here lets busy writers starve a resolving client, and
    /// ZEO's client calls `tpc_finish` anyway after nine conflicting votes.
    Conflicted {
        /// The transaction; its storage transaction was aborted.
        txn: Box<OpenTxn>,
        /// The commit lock, kept.
        lock: Held<L>,
    },
}

/// Why the session's deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The client did not log in and register within `login-timeout`.
    Login,
    /// A transaction held the commit lock past `transaction-timeout`.
    Transaction,
    /// Shutdown's grace ended with a transaction still holding the lock.
    Drain,
}

/// What `tpc_begin` came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// A new transaction is open.
    Started,
    /// The same transaction was begun already; ZEO answers `None`.
    Duplicate,
}

/// Where a write (`storea`, `deleteObject`, `undoa`, ...) goes.
#[derive(Debug)]
pub(crate) enum Staged<'a> {
    /// Into this transaction's log.
    Log(&'a mut OpenTxn),
    /// Nowhere: the transaction went past `max-transaction-size` earlier,
    /// and its vote reports that.
    Dropped,
    /// Nowhere: this write takes the transaction past
    /// `max-transaction-size`. What it logged is dropped and its vote will
    /// fail; the error answers a call that expects a reply.
    Rejected {
        /// Bytes the log would hold with this write.
        staged: u64,
        /// `max-transaction-size`.
        limit: u64,
        /// The `StorageError` to answer with.
        error: WireError,
    },
}

/// What a `vote` needs next.
#[derive(Debug)]
pub(crate) enum VoteStep<L> {
    /// Take the commit lock, then [`Session::start_vote`] or
    /// [`Session::queue_for_lock`].
    Acquire,
    /// The lock is held from a conflicting vote: replay now.
    Run(Box<OpenTxn>, Held<L>),
}

/// What a `tpc_finish` needs next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Not the open transaction (or a read-only session): ZEO answers
    /// `None`.
    NotOpen,
    /// Finish this storage transaction and publish these invalidations,
    /// then [`Session::end`].
    Run {
        /// The voted storage transaction.
        handle: TxnHandle,
        /// What other clients must invalidate.
        oids: Vec<Oid>,
        /// Whether the storage work is small enough to run inline.
        small: bool,
    },
}

/// What is left to undo once a transaction ended: abort the storage
/// transaction if any, then drop the lock.
#[derive(Debug)]
pub(crate) struct Ended<L> {
    /// A storage transaction still begun (aborted before the lock goes).
    pub(crate) storage_txn: Option<TxnHandle>,
    /// Whether that abort is small enough to run inline.
    pub(crate) small: bool,
    /// The commit lock, released when this is dropped.
    pub(crate) lock: Option<L>,
}

/// How a session starts.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionConfig {
    /// Whether clients must log in before `register`.
    pub(crate) auth_required: bool,
    /// Whether the server is read-only.
    pub(crate) read_only: bool,
    /// How long a transaction may hold the commit lock.
    pub(crate) transaction_timeout: Option<Duration>,
    /// When the client must have registered.
    pub(crate) login_deadline: Option<Instant>,
    /// Most bytes one transaction may log (`max-transaction-size`).
    pub(crate) max_transaction_size: Option<u64>,
}

/// One client session: authentication, registration and the transaction
/// phase. See the module documentation.
#[derive(Debug)]
pub(crate) struct Session<L, W> {
    auth: Auth,
    registered: bool,
    read_only: bool,
    transaction_timeout: Option<Duration>,
    login_deadline: Option<Instant>,
    max_transaction_size: Option<u64>,
    /// Set once the server began shutting down while this session held the
    /// commit lock: the end of its grace.
    drain_until: Option<Instant>,
    phase: Phase<L, W>,
}

impl<L, W> Session<L, W> {
    /// A session right after the handshake.
    pub(crate) fn new(config: SessionConfig) -> Self {
        Session {
            auth: if config.auth_required {
                Auth::Pending(None)
            } else {
                Auth::Off
            },
            registered: false,
            read_only: config.read_only,
            transaction_timeout: config.transaction_timeout,
            login_deadline: config.login_deadline,
            max_transaction_size: config.max_transaction_size,
            drain_until: None,
            phase: Phase::Idle,
        }
    }

    /// Whether writes are refused.
    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Where the transaction stands.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> &Phase<L, W> {
        &self.phase
    }

    // Login and registration.

    /// Whether a login call may come now. ZEO 4 logs in once, before
    /// `register`, with calls that expect answers; a server without
    /// authentication knows only `getAuthProtocol` (answering `None`).
    /// False closes the connection.
    pub(crate) fn login_allowed(&self, method: LoginMethod, oneway: bool) -> bool {
        if oneway {
            return false;
        }
        match (&self.auth, method) {
            (_, LoginMethod::GetAuthProtocol) => true,
            (Auth::Pending(_), _) => !self.registered,
            _ => false,
        }
    }

    /// Remembers the challenge just sent, replacing any earlier one.
    pub(crate) fn challenge_issued(&mut self, challenge: Challenge) {
        self.auth = Auth::Pending(Some(challenge));
    }

    /// The challenge a response answers. A challenge answers one
    /// response: another try needs a new one.
    pub(crate) fn take_challenge(&mut self) -> Option<Challenge> {
        match &mut self.auth {
            Auth::Pending(issued) => issued.take(),
            _ => None,
        }
    }

    /// The client logged in: from now on every frame carries a MAC.
    pub(crate) fn logged_in(&mut self) {
        self.auth = Auth::Done;
    }

    /// What the client had to do before `login-timeout`, for the log.
    pub(crate) fn awaited(&self) -> &'static str {
        match self.auth {
            Auth::Pending(_) => "log in and register",
            _ => "register",
        }
    }

    /// Whether a request may come now: `register` first and once, then
    /// anything but `register`. False closes the connection.
    pub(crate) fn request_allowed(&self, is_register: bool) -> bool {
        is_register != self.registered
    }

    /// Whether a call with bad arguments closes the connection rather
    /// than getting a `TypeError`: a one-way call has nobody to answer,
    /// and before `register` only `register` is answered.
    pub(crate) fn bad_arguments_close(&self, method: &str, oneway: bool) -> bool {
        oneway || (!self.registered && method != "register")
    }

    /// Whether `register` may be tried: not before logging in.
    pub(crate) fn may_register(&self) -> Result<(), WireError> {
        match self.auth {
            Auth::Pending(_) => Err(WireError::auth_error(
                "Client was never authenticated with server!",
            )),
            _ => Ok(()),
        }
    }

    /// Registers with a storage (read-only if either side says so).
    pub(crate) fn register(
        &mut self,
        read_only: bool,
        storage_read_only: bool,
    ) -> Result<(), WireError> {
        self.may_register()?;
        if !read_only && (self.read_only || storage_read_only) {
            return Err(WireError::read_only());
        }
        self.read_only |= read_only;
        self.registered = true;
        Ok(())
    }

    // Time and shutdown.

    /// The server began shutting down at `now`. A session whose vote
    /// succeeded gets [`SHUTDOWN_GRACE`] to finish; the others end at once.
    /// Returns whether the session goes on.
    pub(crate) fn shutdown(&mut self, now: Instant) -> bool {
        if !self.is_voted() {
            return false;
        }
        self.drain_until.get_or_insert(now + SHUTDOWN_GRACE);
        true
    }

    /// Whether the server is shutting down and this session is only still
    /// there to finish its commit.
    pub(crate) fn is_draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// Whether the session should end now: shutting down, and its commit
    /// finished or aborted.
    pub(crate) fn drained(&self) -> bool {
        self.is_draining() && !self.is_voted()
    }

    /// The next deadline and what passing it means: `login-timeout` until
    /// registered, `transaction-timeout` while holding the commit lock, and
    /// the end of shutdown's grace, whichever comes first.
    pub(crate) fn deadline(&self) -> Option<(Instant, Expiry)> {
        let drain_until = self.drain_until;
        let login = self
            .login_deadline
            .filter(|_| !self.registered)
            .map(|d| (d, Expiry::Login));
        let held = match &self.phase {
            Phase::Voted { lock, .. } | Phase::Conflicted { lock, .. } => Some(lock.since),
            _ => None,
        };
        let txn = held
            .zip(self.transaction_timeout)
            .map(|(since, t)| (since + t, Expiry::Transaction));
        let drain = drain_until.map(|d| (d, Expiry::Drain));
        // On a tie the drain wins: the log then says why.
        [drain, txn, login]
            .into_iter()
            .flatten()
            .min_by_key(|(d, _)| *d)
    }

    /// The configured transaction timeout.
    pub(crate) fn transaction_timeout(&self) -> Option<Duration> {
        self.transaction_timeout
    }

    // Transactions.

    /// Whether a transaction is open, in any phase.
    pub(crate) fn has_txn(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// Whether the storage voted yes and the lock is held until finish.
    pub(crate) fn is_voted(&self) -> bool {
        matches!(self.phase, Phase::Voted { .. })
    }

    /// When the commit lock this session holds was granted.
    pub(crate) fn lock_held_since(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Voted { lock, .. } | Phase::Conflicted { lock, .. } => Some(lock.since),
            _ => None,
        }
    }

    fn writable(&self) -> Result<(), WireError> {
        if self.read_only {
            return Err(WireError::read_only());
        }
        Ok(())
    }

    fn txn_id(&self) -> Option<TxnId> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Voting(id) => Some(*id),
            Phase::Open(txn)
            | Phase::AwaitingLock { txn, .. }
            | Phase::Voted { txn, .. }
            | Phase::Conflicted { txn, .. } => Some(txn.id),
        }
    }

    fn txn_mut(&mut self) -> Option<&mut OpenTxn> {
        match &mut self.phase {
            Phase::Idle | Phase::Voting(_) => None,
            Phase::Open(txn)
            | Phase::AwaitingLock { txn, .. }
            | Phase::Voted { txn, .. }
            | Phase::Conflicted { txn, .. } => Some(txn),
        }
    }

    /// ZEO's `_check_tid(id, exc=StorageTransactionError)`.
    fn check(&mut self, id: TxnId) -> Result<&mut OpenTxn, WireError> {
        self.writable()?;
        let current = self.txn_id();
        match self.txn_mut() {
            Some(txn) if txn.id == id => Ok(txn),
            _ => {
                match current {
                    None => tracing::warn!(txn = %id, "no current transaction"),
                    Some(c) => {
                        tracing::warn!(txn = %id, current = %c, "not the current transaction")
                    }
                }
                Err(WireError::transaction_mismatch(current, id))
            }
        }
    }

    /// `tpc_begin(id, ...)`: `open` builds the transaction once the
    /// session agreed to one.
    pub(crate) fn begin(
        &mut self,
        id: TxnId,
        open: impl FnOnce() -> Result<OpenTxn, WireError>,
    ) -> Result<Begin, WireError> {
        self.writable()?;
        match self.txn_id() {
            Some(current) if current == id => {
                tracing::info!(txn = %id, "duplicate tpc_begin");
                Ok(Begin::Duplicate)
            }
            Some(_) => Err(WireError::storage_transaction(
                "Multiple simultaneous tpc_begin requests from one client.",
            )),
            None => {
                self.phase = Phase::Open(Box::new(open()?));
                Ok(Begin::Started)
            }
        }
    }

    /// The transaction a write (`storea`, `deleteObject`, `undoa`, ...)
    /// goes to: open or resolving conflicts, not voting.
    fn stage(&mut self, id: TxnId) -> Result<&mut OpenTxn, WireError> {
        let voting = matches!(
            self.phase,
            Phase::AwaitingLock { .. } | Phase::Voting(_) | Phase::Voted { .. }
        );
        let txn = self.check(id)?;
        if voting {
            return Err(WireError::storage_transaction(
                "transaction is already voting",
            ));
        }
        Ok(txn)
    }

    /// A write of `len` logged bytes to transaction `id`, within
    /// `max-transaction-size`.
    pub(crate) fn stage_write(&mut self, id: TxnId, len: u64) -> Result<Staged<'_>, WireError> {
        let max = self.max_transaction_size;
        let txn = self.stage(id)?;
        if txn.rejected.is_some() {
            return Ok(Staged::Dropped);
        }
        let staged = txn.log.size().saturating_add(len);
        match max.filter(|limit| staged > *limit) {
            None => Ok(Staged::Log(txn)),
            Some(limit) => {
                let message = format!(
                    "transaction too large: {staged} bytes staged, over max-transaction-size ({limit} bytes)"
                );
                txn.log.discard();
                txn.conflicts.clear();
                let error = WireError::storage_error(&message);
                txn.rejected = Some(error.clone());
                Ok(Staged::Rejected {
                    staged,
                    limit,
                    error,
                })
            }
        }
    }

    /// Fails transaction `id` at its vote with `error` (a write the server
    /// could not keep: a blob upload on a full disk, a record that is not
    /// bytes), dropping what it staged; later writes to it are dropped too.
    /// The first reason stands.
    pub(crate) fn reject(&mut self, id: TxnId, error: WireError) -> Result<(), WireError> {
        let txn = self.stage(id)?;
        if txn.rejected.is_none() {
            txn.log.discard();
            txn.conflicts.clear();
            txn.rejected = Some(error);
        }
        Ok(())
    }

    /// `vote(id)`.
    pub(crate) fn vote(&mut self, id: TxnId) -> Result<VoteStep<L>, WireError> {
        if let Some(error) = &self.check(id)?.rejected {
            // The client aborts after a failed vote, as after any other.
            return Err(error.clone());
        }
        match std::mem::replace(&mut self.phase, Phase::Voting(id)) {
            Phase::Conflicted { txn, lock } => Ok(VoteStep::Run(txn, lock)),
            other => {
                let refusal = match &other {
                    Phase::Voted { .. } => Some("Already voting (locked)"),
                    Phase::AwaitingLock { .. } | Phase::Voting(_) => {
                        Some("Already voting (waiting)")
                    }
                    _ => None,
                };
                self.phase = other;
                match refusal {
                    Some(message) => Err(WireError::storage_transaction(message)),
                    None => Ok(VoteStep::Acquire),
                }
            }
        }
    }

    /// The lock was free: the open transaction goes to the storage.
    pub(crate) fn start_vote(&mut self, guard: L, now: Instant) -> Option<(Box<OpenTxn>, Held<L>)> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Open(txn) => {
                self.phase = Phase::Voting(txn.id);
                Some((txn, Held { guard, since: now }))
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The lock is taken: the vote waits in its queue.
    pub(crate) fn queue_for_lock(&mut self, wait: W, msgid: Value) {
        self.phase = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Open(txn) => Phase::AwaitingLock { txn, wait, msgid },
            other => other,
        };
    }

    /// The place in the lock's queue, while waiting.
    pub(crate) fn waiting(&mut self) -> Option<&mut W> {
        match &mut self.phase {
            Phase::AwaitingLock { wait, .. } => Some(wait),
            _ => None,
        }
    }

    /// The lock came to the waiting vote: its transaction goes to the
    /// storage, and the vote call is answered when that is done.
    pub(crate) fn lock_granted(
        &mut self,
        guard: L,
        now: Instant,
    ) -> Option<(Box<OpenTxn>, Held<L>, Value)> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::AwaitingLock { txn, msgid, .. } => {
                self.phase = Phase::Voting(txn.id);
                Some((txn, Held { guard, since: now }, msgid))
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The storage voted yes.
    pub(crate) fn voted(&mut self, txn: Box<OpenTxn>, lock: Held<L>) {
        self.phase = Phase::Voted { txn, lock };
    }

    /// The vote reported conflicts; the lock stays.
    pub(crate) fn conflicted(&mut self, txn: Box<OpenTxn>, lock: Held<L>) {
        self.phase = Phase::Conflicted { txn, lock };
    }

    /// `tpc_finish(id)`.
    pub(crate) fn finish(&mut self, id: TxnId) -> Result<Finish, WireError> {
        if self.read_only || self.txn_id() != Some(id) {
            // ZEO answers None when the id is not the open transaction.
            return Ok(Finish::NotOpen);
        }
        match &mut self.phase {
            Phase::Voted { txn, .. } => match txn.storage_txn.take() {
                Some(handle) => Ok(Finish::Run {
                    handle,
                    oids: std::mem::take(&mut txn.invalidated),
                    small: txn.is_small(),
                }),
                None => Err(WireError::assertion_error("finished called wo lock")),
            },
            _ => Err(WireError::assertion_error("finished called wo lock")),
        }
    }

    /// Whether `tpc_abort(id)` aborts anything: the open transaction of a
    /// writable session. ZEO ignores any other id.
    pub(crate) fn aborts(&self, id: TxnId) -> bool {
        !self.read_only && self.txn_id() == Some(id)
    }

    /// Ends the transaction, whatever its phase: leaves the lock's queue,
    /// and hands back what the caller must still undo, in order (abort the
    /// storage transaction, then release the lock). `None` when there was
    /// no transaction.
    pub(crate) fn end(&mut self) -> Option<Ended<L>> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => None,
            Phase::Voting(_) => Some(Ended {
                storage_txn: None,
                small: true,
                lock: None,
            }),
            Phase::Open(txn) | Phase::AwaitingLock { txn, .. } => Some(Ended {
                storage_txn: txn.storage_txn,
                small: txn.is_small(),
                lock: None,
            }),
            Phase::Voted { txn, lock } | Phase::Conflicted { txn, lock } => Some(Ended {
                storage_txn: txn.storage_txn,
                small: txn.is_small(),
                lock: Some(lock.guard),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every phase transition and every refusal, on a simulated clock: the
    //! session never reads one, so time is whatever the test passes.

    use super::*;
    use crate::txn_log::TxnLog;
    use zeo_storage::{TransactionMetaData, TxnStatus};

    /// A commit lock guard that is just a name.
    #[derive(Debug, PartialEq)]
    struct Guard(&'static str);

    type TestSession = Session<Guard, ()>;

    const T1: TxnId = TxnId(1);
    const T2: TxnId = TxnId(2);

    fn session(config: SessionConfig) -> TestSession {
        Session::new(config)
    }

    fn registered(read_only: bool) -> TestSession {
        let mut s = session(SessionConfig {
            transaction_timeout: Some(Duration::from_secs(30)),
            ..SessionConfig::default()
        });
        s.register(read_only, false).unwrap();
        s
    }

    fn txn(id: TxnId) -> Result<OpenTxn, WireError> {
        Ok(OpenTxn::new(
            id,
            TransactionMetaData::default(),
            None,
            TxnStatus::default(),
            TxnLog::new(1 << 20, None),
        ))
    }

    fn begun(id: TxnId) -> TestSession {
        let mut s = registered(false);
        assert_eq!(s.begin(id, || txn(id)).unwrap(), Begin::Started);
        s
    }

    /// Takes `s` (with `id` open) through an immediate lock to Voted,
    /// the storage transaction begun as `handle`.
    fn voted(s: &mut TestSession, id: TxnId, at: Instant) {
        assert!(matches!(s.vote(id).unwrap(), VoteStep::Acquire));
        let (mut txn, lock) = s.start_vote(Guard("lock"), at).unwrap();
        assert!(matches!(s.phase(), Phase::Voting(v) if *v == id));
        txn.storage_txn = Some(TxnHandle(7));
        txn.invalidated = vec![Oid(3)];
        s.voted(txn, lock);
    }

    fn mismatch(current: Option<TxnId>, given: TxnId) -> WireError {
        WireError::transaction_mismatch(current, given)
    }

    #[test]
    fn login_calls_without_authentication() {
        let s = session(SessionConfig::default());
        assert!(s.login_allowed(LoginMethod::GetAuthProtocol, false));
        assert!(!s.login_allowed(LoginMethod::GetAuthProtocol, true));
        assert!(!s.login_allowed(LoginMethod::GetChallenge, false));
        assert!(!s.login_allowed(LoginMethod::Response, false));
        assert_eq!(s.awaited(), "register");
        assert_eq!(s.may_register(), Ok(()));
    }

    #[test]
    fn login_calls_with_authentication() {
        let mut s = session(SessionConfig {
            auth_required: true,
            ..SessionConfig::default()
        });
        for method in [
            LoginMethod::GetAuthProtocol,
            LoginMethod::GetChallenge,
            LoginMethod::Response,
        ] {
            assert!(s.login_allowed(method, false), "{method:?}");
            assert!(!s.login_allowed(method, true), "{method:?} one-way");
        }
        assert_eq!(s.awaited(), "log in and register");
        let refused = WireError::auth_error("Client was never authenticated with server!");
        assert_eq!(s.may_register(), Err(refused.clone()));
        assert_eq!(s.register(false, false), Err(refused));
        assert!(s.request_allowed(true), "register still expected");

        // A challenge answers one response.
        assert!(s.take_challenge().is_none());
        let challenge = Challenge {
            realm: "r".into(),
            challenge: "c".into(),
            key_nonce: "n".into(),
        };
        s.challenge_issued(challenge.clone());
        assert_eq!(s.take_challenge(), Some(challenge));
        assert!(s.take_challenge().is_none());
        assert!(s.login_allowed(LoginMethod::GetChallenge, false));

        s.logged_in();
        assert!(!s.login_allowed(LoginMethod::GetChallenge, false));
        assert!(!s.login_allowed(LoginMethod::Response, false));
        assert!(s.login_allowed(LoginMethod::GetAuthProtocol, false));
        assert!(s.take_challenge().is_none());
        assert_eq!(s.register(false, false), Ok(()));
    }

    #[test]
    fn login_ends_with_register_even_unauthenticated_calls() {
        // A pending login cannot register, so only an authenticated
        // session reaches this; the rule holds regardless.
        let mut s = session(SessionConfig {
            auth_required: true,
            ..SessionConfig::default()
        });
        s.logged_in();
        s.register(false, false).unwrap();
        assert!(!s.login_allowed(LoginMethod::Response, false));
    }

    #[test]
    fn register_comes_first_and_once() {
        let mut s = session(SessionConfig::default());
        assert!(s.request_allowed(true));
        assert!(!s.request_allowed(false));
        assert!(s.bad_arguments_close("loadBefore", false));
        assert!(!s.bad_arguments_close("register", false));
        assert!(s.bad_arguments_close("register", true));
        s.register(false, false).unwrap();
        assert!(!s.request_allowed(true));
        assert!(s.request_allowed(false));
        assert!(!s.bad_arguments_close("loadBefore", false));
        assert!(s.bad_arguments_close("loadBefore", true));
    }

    #[test]
    fn read_only_registration() {
        let read_only = WireError::read_only();
        // A read-only server refuses writable registrations.
        let mut s = session(SessionConfig {
            read_only: true,
            ..SessionConfig::default()
        });
        assert_eq!(s.register(false, false), Err(read_only.clone()));
        assert!(s.request_allowed(true), "a refused register may be retried");
        assert_eq!(s.register(true, false), Ok(()));
        // So does a read-only storage.
        let mut s = session(SessionConfig::default());
        assert_eq!(s.register(false, true), Err(read_only.clone()));
        // A client may ask for read-only itself.
        let mut s = session(SessionConfig::default());
        s.register(true, false).unwrap();
        assert!(s.is_read_only());
        assert_eq!(s.begin(T1, || txn(T1)), Err(read_only.clone()));
        assert_eq!(s.stage(T1).unwrap_err(), read_only.clone());
        assert_eq!(s.vote(T1).unwrap_err(), read_only);
        assert_eq!(s.finish(T1), Ok(Finish::NotOpen));
        assert!(!s.aborts(T1));
    }

    #[test]
    fn begin_open_and_duplicates() {
        let mut s = registered(false);
        assert!(!s.has_txn());
        assert_eq!(s.stage(T1).unwrap_err(), mismatch(None, T1));
        assert_eq!(s.begin(T1, || txn(T1)), Ok(Begin::Started));
        assert!(matches!(s.phase(), Phase::Open(t) if t.id == T1));
        assert!(s.has_txn());
        assert_eq!(
            s.begin(T1, || panic!("a duplicate builds nothing")),
            Ok(Begin::Duplicate)
        );
        assert_eq!(
            s.begin(T2, || txn(T2)),
            Err(WireError::storage_transaction(
                "Multiple simultaneous tpc_begin requests from one client."
            ))
        );
        assert!(s.stage(T1).is_ok());
        assert_eq!(s.stage(T2).unwrap_err(), mismatch(Some(T1), T2));
        assert_eq!(s.vote(T2).unwrap_err(), mismatch(Some(T1), T2));
        assert_eq!(s.finish(T2), Ok(Finish::NotOpen));
        assert!(!s.aborts(T2));
        assert!(s.aborts(T1));
        // A failed begin opens nothing.
        let mut s = registered(false);
        let bad = WireError::type_error("tpc_begin() extension must be a dict");
        assert_eq!(s.begin(T1, || Err(bad.clone())), Err(bad));
        assert!(!s.has_txn());
    }

    #[test]
    fn finish_without_a_vote_is_an_assertion_error() {
        let mut s = begun(T1);
        assert_eq!(
            s.finish(T1),
            Err(WireError::assertion_error("finished called wo lock"))
        );
        assert!(matches!(s.phase(), Phase::Open(_)), "nothing changed");
    }

    #[test]
    fn vote_with_the_lock_free_then_finish() {
        let t0 = Instant::now();
        let mut s = begun(T1);
        voted(&mut s, T1, t0);
        assert!(s.is_voted());
        assert_eq!(
            s.stage(T1).unwrap_err(),
            WireError::storage_transaction("transaction is already voting")
        );
        assert_eq!(
            s.vote(T1).unwrap_err(),
            WireError::storage_transaction("Already voting (locked)")
        );
        assert!(s.is_voted(), "a refused vote changes nothing");
        assert_eq!(
            s.finish(T1),
            Ok(Finish::Run {
                handle: TxnHandle(7),
                oids: vec![Oid(3)],
                small: true
            })
        );
        let ended = s.end().unwrap();
        assert_eq!(
            ended.storage_txn, None,
            "finish took the storage transaction"
        );
        assert_eq!(ended.lock, Some(Guard("lock")));
        assert!(!s.has_txn());
        assert!(s.end().is_none(), "one end per transaction");
    }

    /// Group commit: the finish takes the lock with it (to release it once
    /// the storage has the transaction written) and the session is idle
    /// while the fsync is waited for: no transaction timeout runs, and a
    /// repeated finish is answered as one for no open transaction.
    #[test]
    fn a_group_commit_finish_takes_the_lock_and_leaves_the_session_idle() {
        let t0 = Instant::now();
        let mut s = begun(T1);
        voted(&mut s, T1, t0);
        assert!(s.deadline().is_some(), "the voted transaction's timeout");
        assert!(matches!(s.finish(T1), Ok(Finish::Run { .. })));
        let ended = s.end().unwrap();
        assert_eq!((ended.storage_txn, ended.lock), (None, Some(Guard("lock"))));
        assert_eq!(s.deadline(), None);
        assert!(!s.has_txn() && !s.is_voted());
        assert_eq!(s.finish(T1), Ok(Finish::NotOpen));
    }

    #[test]
    fn vote_waiting_for_the_lock() {
        let t0 = Instant::now();
        let mut s = begun(T1);
        assert!(matches!(s.vote(T1).unwrap(), VoteStep::Acquire));
        s.queue_for_lock((), Value::Int(42));
        assert!(s.waiting().is_some());
        assert_eq!(
            s.vote(T1).unwrap_err(),
            WireError::storage_transaction("Already voting (waiting)")
        );
        assert_eq!(
            s.stage(T1).unwrap_err(),
            WireError::storage_transaction("transaction is already voting")
        );
        assert_eq!(
            s.finish(T1),
            Err(WireError::assertion_error("finished called wo lock"))
        );
        assert_eq!(s.deadline(), None, "no timeout before the lock");
        assert!(!s.is_voted());

        let granted = t0 + Duration::from_secs(100);
        let (txn, lock, msgid) = s.lock_granted(Guard("late"), granted).unwrap();
        assert_eq!((txn.id, msgid, lock.since), (T1, Value::Int(42), granted));
        assert!(s.waiting().is_none());
        s.voted(txn, lock);
        assert_eq!(
            s.deadline(),
            Some((granted + Duration::from_secs(30), Expiry::Transaction))
        );
    }

    #[test]
    fn a_grant_after_the_vote_ended_is_ignored() {
        let mut s = begun(T1);
        let _ = s.vote(T1).unwrap();
        s.queue_for_lock((), Value::Int(1));
        let ended = s.end().unwrap();
        assert!(ended.lock.is_none() && ended.storage_txn.is_none());
        assert!(s.lock_granted(Guard("g"), Instant::now()).is_none());
        assert!(s.start_vote(Guard("g"), Instant::now()).is_none());
        assert!(!s.has_txn());
    }

    #[test]
    fn conflicts_keep_the_lock_and_its_clock() {
        let t0 = Instant::now();
        let mut s = begun(T1);
        assert!(matches!(s.vote(T1).unwrap(), VoteStep::Acquire));
        let (txn, lock) = s.start_vote(Guard("lock"), t0).unwrap();
        s.conflicted(txn, lock);
        assert!(!s.is_voted());
        assert_eq!(
            s.deadline(),
            Some((t0 + Duration::from_secs(30), Expiry::Transaction))
        );
        // The client re-stores its resolutions, then votes again with the
        // lock it kept: no second acquisition, the same deadline.
        assert!(s.stage(T1).is_ok());
        let (txn, lock) = match s.vote(T1).unwrap() {
            VoteStep::Run(txn, lock) => (txn, lock),
            VoteStep::Acquire => panic!("the lock was kept"),
        };
        assert_eq!((lock.guard.0, lock.since), ("lock", t0));
        assert!(matches!(s.phase(), Phase::Voting(_)));
        s.conflicted(txn, lock);
        // Aborting while resolving hands the lock back.
        assert!(s.aborts(T1));
        let ended = s.end().unwrap();
        assert_eq!(ended.lock, Some(Guard("lock")));
    }

    #[test]
    fn a_failed_vote_ends_in_idle() {
        let mut s = begun(T1);
        let _ = s.vote(T1).unwrap();
        let taken = s.start_vote(Guard("lock"), Instant::now()).unwrap();
        drop(taken);
        let ended = s.end().unwrap();
        assert!(ended.lock.is_none() && ended.storage_txn.is_none());
        assert!(!s.has_txn());
        assert_eq!(s.begin(T2, || txn(T2)), Ok(Begin::Started));
    }

    #[test]
    fn an_abort_after_the_vote_aborts_the_storage_transaction_first() {
        let mut s = begun(T1);
        voted(&mut s, T1, Instant::now());
        let ended = s.end().unwrap();
        assert_eq!(ended.storage_txn, Some(TxnHandle(7)));
        assert_eq!(ended.lock, Some(Guard("lock")));
    }

    #[test]
    fn a_transaction_past_max_transaction_size_is_rejected_once_and_fails_its_vote() {
        let mut s = session(SessionConfig {
            max_transaction_size: Some(100),
            ..SessionConfig::default()
        });
        s.register(false, false).unwrap();
        s.begin(T1, || txn(T1)).unwrap();
        match s.stage_write(T1, 60).unwrap() {
            Staged::Log(txn) => {
                let op = crate::txn_log::TxnOp::Store {
                    oid: Oid(1),
                    serial: zeo_storage::Tid::ZERO,
                    data: vec![0; 40],
                };
                txn.push_store(op).unwrap();
            }
            other => panic!("{other:?}"),
        }
        let logged = match s.phase() {
            Phase::Open(txn) => txn.log.size(),
            other => panic!("{other:?}"),
        };
        let message = format!(
            "transaction too large: {} bytes staged, over max-transaction-size (100 bytes)",
            logged + 60
        );
        match s.stage_write(T1, 60).unwrap() {
            Staged::Rejected {
                staged,
                limit,
                error,
            } => {
                assert_eq!((staged, limit), (logged + 60, 100));
                assert_eq!(error, WireError::storage_error(&message));
            }
            other => panic!("{other:?}"),
        }
        match s.phase() {
            Phase::Open(txn) => assert_eq!(txn.log.size(), 0, "what was logged is dropped"),
            other => panic!("{other:?}"),
        }
        // Later writes go nowhere, quietly; the vote fails with the reason.
        assert!(matches!(s.stage_write(T1, 1).unwrap(), Staged::Dropped));
        assert_eq!(s.vote(T1).unwrap_err(), WireError::storage_error(&message));
        assert!(
            matches!(s.phase(), Phase::Open(_)),
            "the client aborts next"
        );
        // A write to another transaction is still a mismatch.
        assert_eq!(s.stage_write(T2, 1).unwrap_err(), mismatch(Some(T1), T2));
    }

    #[test]
    fn login_deadline_on_a_simulated_clock() {
        let t0 = Instant::now();
        let mut s = session(SessionConfig {
            login_deadline: Some(t0 + Duration::from_secs(10)),
            transaction_timeout: Some(Duration::from_secs(1)),
            ..SessionConfig::default()
        });
        assert_eq!(
            s.deadline(),
            Some((t0 + Duration::from_secs(10), Expiry::Login))
        );
        // A shutdown ends a session without a voted commit at once.
        assert!(!s.shutdown(t0));
        assert!(!s.is_draining());
        s.register(false, false).unwrap();
        assert_eq!(s.deadline(), None, "registered: no login deadline");
    }

    #[test]
    fn transaction_deadline_and_drain_on_a_simulated_clock() {
        let t0 = Instant::now();
        let mut s = begun(T1);
        assert_eq!(s.deadline(), None, "an open transaction has no timeout");
        voted(&mut s, T1, t0);
        let timeout = t0 + Duration::from_secs(30);
        assert_eq!(s.deadline(), Some((timeout, Expiry::Transaction)));
        let _ = s.end();
        assert_eq!(s.deadline(), None);
        // Without a configured timeout nothing expires.
        let mut s = session(SessionConfig::default());
        s.register(false, false).unwrap();
        s.begin(T1, || txn(T1)).unwrap();
        voted(&mut s, T1, t0);
        assert_eq!(s.deadline(), None);
        assert_eq!(s.transaction_timeout(), None);
    }

    /// A voted session shut down at `t0 + shutdown_at` (timeout 30 s from
    /// `t0`).
    fn shut_down_after_vote(shutdown_at: u64) -> (TestSession, Instant) {
        let t0 = Instant::now();
        let mut s = begun(T1);
        voted(&mut s, T1, t0);
        assert!(s.shutdown(t0 + Duration::from_secs(shutdown_at)));
        (s, t0)
    }

    #[test]
    fn shutdown_grace_on_a_simulated_clock() {
        let secs = Duration::from_secs;
        // The grace ends before the transaction timeout.
        let (mut s, t0) = shut_down_after_vote(0);
        assert!(s.is_draining() && !s.drained());
        assert_eq!(s.deadline(), Some((t0 + SHUTDOWN_GRACE, Expiry::Drain)));
        // A second shutdown does not extend the grace.
        assert!(s.shutdown(t0 + secs(3)));
        assert_eq!(s.deadline(), Some((t0 + SHUTDOWN_GRACE, Expiry::Drain)));
        // Finishing within it ends the session.
        assert!(matches!(s.finish(T1), Ok(Finish::Run { .. })));
        let _ = s.end();
        assert!(s.drained());
        // The timeout comes first.
        let (s, t0) = shut_down_after_vote(60);
        assert_eq!(s.deadline(), Some((t0 + secs(30), Expiry::Transaction)));
        // On a tie the drain names the cause.
        let (s, t0) = shut_down_after_vote(25);
        assert_eq!(s.deadline(), Some((t0 + secs(30), Expiry::Drain)));
    }
}

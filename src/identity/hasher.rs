//! [`HashPool`]: password hashing (Argon2id) on a fixed number of dedicated
//! threads, each reusing one memory block for its whole life, behind a bounded
//! queue.
//!
//! Memory is bounded by `threads × kdf.memory_kib` however many logins arrive at
//! once: a thread allocates its block at its first hash and keeps it, so the
//! allocator never has to find (and then keep) fresh 19 MiB chunks per request. A
//! request beyond `threads + queue` is refused at once with
//! [`IdentityError::Busy`] (429). Stored hashes carry their own parameters; one
//! that needs a bigger block grows the thread's block to that size (stored hashes
//! come from this provider's own store).

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand_core::RngCore;
use tokio::sync::oneshot;
use tracing::warn;

use super::config::KdfParams;
use super::error::IdentityError;
use super::model::Secret;

/// Salt length of new hashes, bytes.
const SALT_LEN: usize = 16;

/// Output length of new hashes, bytes.
const OUTPUT_LEN: usize = 32;

/// Salt of the decoy hash computed when an unknown user logs in, so a login takes
/// as long whether or not the user exists.
const DECOY_SALT: &[u8] = b"hyperty-decoy-salt";

enum Work {
    /// A new PHC string with a random salt.
    Hash,
    /// Whether the password matches this PHC string.
    Verify(Arc<str>),
    /// The cost of a check, for a user that does not exist; answers false.
    Decoy,
    /// Occupies the thread until the sender drops (tests of the bounds).
    #[cfg(test)]
    Hold(mpsc::Sender<()>, Receiver<()>),
}

enum Outcome {
    Hashed(String),
    Verified(bool),
    Failed,
}

struct Job {
    password: Secret,
    work: Work,
    reply: oneshot::Sender<Outcome>,
}

/// Dedicated hashing threads and their bounded queue (see the module docs).
pub(crate) struct HashPool {
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool").finish_non_exhaustive()
    }
}

impl HashPool {
    /// Starts `threads` hashing threads with room for `queue` waiting requests.
    /// The threads end when the pool is dropped.
    pub(crate) fn start(
        kdf: &KdfParams,
        threads: usize,
        queue: usize,
    ) -> Result<HashPool, IdentityError> {
        let params = kdf.params()?;
        let (jobs, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let (rx, params) = (rx.clone(), params.clone());
            std::thread::Builder::new()
                .name(format!("idp-hash-{i}"))
                .spawn(move || worker(&rx, &params))
                .map_err(|_| IdentityError::Internal("cannot start a password hashing thread"))?;
        }
        Ok(HashPool { jobs })
    }

    fn submit(
        &self,
        password: Secret,
        work: Work,
    ) -> Result<oneshot::Receiver<Outcome>, IdentityError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password,
            work,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(IdentityError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(IdentityError::Internal(
                "the password hashing threads are gone",
            )),
        }
    }

    /// Queues a new hash of `password`; the future answers its PHC string.
    /// [`IdentityError::Busy`] when the pool and its queue are full.
    pub(crate) fn hash(
        &self,
        password: Secret,
    ) -> Result<impl std::future::Future<Output = Result<String, IdentityError>>, IdentityError>
    {
        let answer = self.submit(password, Work::Hash)?;
        Ok(async move {
            match answer.await {
                Ok(Outcome::Hashed(phc)) => Ok(phc),
                _ => Err(IdentityError::Internal("password hashing failed")),
            }
        })
    }

    /// Queues a check of `password` against `stored` (a decoy of the same cost
    /// when `None`); the future answers whether it matches.
    pub(crate) fn verify(
        &self,
        password: Secret,
        stored: Option<Arc<str>>,
    ) -> Result<impl std::future::Future<Output = bool>, IdentityError> {
        let work = stored.map_or(Work::Decoy, Work::Verify);
        let answer = self.submit(password, work)?;
        Ok(async move { matches!(answer.await, Ok(Outcome::Verified(true))) })
    }

    /// Occupies one thread (or a queue slot) until the returned sender drops; the
    /// receiver fires once a thread has taken the job.
    #[cfg(test)]
    pub(crate) fn hold(&self) -> Result<(mpsc::Sender<()>, Receiver<()>), IdentityError> {
        let (started, on_start) = mpsc::channel();
        let (release, released) = mpsc::channel();
        // nobody waits for the outcome of a hold
        drop(self.submit(Secret::new(""), Work::Hold(started, released))?);
        Ok((release, on_start))
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>, params: &Params) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let pw = job.password.expose().as_bytes();
        let outcome = match job.work {
            Work::Hash => new_hash(pw, params, &mut memory),
            Work::Verify(phc) => Outcome::Verified(check(pw, &phc, &mut memory)),
            Work::Decoy => {
                let mut out = [0u8; OUTPUT_LEN];
                let _ = run(params, pw, DECOY_SALT, &mut out, &mut memory);
                Outcome::Verified(false)
            }
            #[cfg(test)]
            Work::Hold(started, release) => {
                let _ = started.send(());
                let _ = release.recv();
                Outcome::Failed
            }
        };
        let _ = job.reply.send(outcome);
    }
}

/// Argon2id over `memory`, grown (never shrunk) to what `params` needs.
fn run(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory[..blocks],
    )
}

fn new_hash(password: &[u8], params: &Params, memory: &mut Vec<Block>) -> Outcome {
    let mut salt = [0u8; SALT_LEN];
    rand_core::OsRng.fill_bytes(&mut salt);
    let mut out = [0u8; OUTPUT_LEN];
    if run(params, password, &salt, &mut out, memory).is_err() {
        return Outcome::Failed;
    }
    let phc = (|| {
        Some(PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(params).ok()?,
            salt: Some(Salt::new(&salt).ok()?),
            hash: Some(Output::new(&out).ok()?),
        })
    })();
    match phc {
        Some(h) => Outcome::Hashed(h.to_string()),
        None => Outcome::Failed,
    }
}

/// Whether `password` matches the PHC string `phc` (Argon2id v1.3 only, with
/// the parameters the string carries).
fn check(password: &[u8], phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    if hash.algorithm != Algorithm::Argon2id.ident()
        || hash.version.is_some_and(|v| v != u32::from(Version::V0x13))
    {
        warn!("a stored password hash is not Argon2id v1.3");
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut buf = [0u8; Output::MAX_LENGTH];
    let Some(out) = buf.get_mut(..expected.len()) else {
        return false;
    };
    if run(&params, password, salt, out, memory).is_err() {
        return false;
    }
    // `Output` compares in constant time
    Output::new(out).is_ok_and(|computed| &computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{PasswordHasher, PasswordVerifier};

    fn pool(threads: usize, queue: usize) -> HashPool {
        HashPool::start(&KdfParams::fast_insecure(), threads, queue).expect("pool")
    }

    #[actix::test]
    async fn hashes_verify_and_match_the_reference_implementation() {
        let p = pool(2, 4);
        let phc = p.hash(Secret::new("pass word")).unwrap().await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        let stored: Arc<str> = Arc::from(phc.as_str());
        assert!(
            p.verify(Secret::new("pass word"), Some(stored.clone()))
                .unwrap()
                .await
        );
        assert!(
            !p.verify(Secret::new("pass wore"), Some(stored))
                .unwrap()
                .await
        );
        assert!(!p.verify(Secret::new("pass word"), None).unwrap().await);
        assert!(
            !p.verify(Secret::new("x"), Some(Arc::from("not a hash")))
                .unwrap()
                .await
        );
        // the reference implementation reads ours, and we read its
        let argon = KdfParams::fast_insecure().argon2().unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(argon.verify_password(b"pass word", &parsed).is_ok());
        let theirs = argon
            .hash_password_with_salt(b"other pw", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(
            p.verify(Secret::new("other pw"), Some(Arc::from(theirs)))
                .unwrap()
                .await
        );
        // a stored hash with a bigger memory cost grows the block and still verifies
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password_with_salt(b"big pw", b"0123456789abcdef")
        .unwrap()
        .to_string();
        assert!(
            p.verify(Secret::new("big pw"), Some(Arc::from(big)))
                .unwrap()
                .await
        );
    }

    #[actix::test]
    async fn requests_beyond_threads_and_queue_are_refused() {
        let p = pool(1, 1);
        let (release, started) = p.hold().unwrap();
        started.recv().unwrap(); // the only thread is busy
        let queued = p.hash(Secret::new("waits its turn")).unwrap();
        assert!(matches!(
            p.hash(Secret::new("one too many")),
            Err(IdentityError::Busy)
        ));
        assert!(matches!(
            p.verify(Secret::new("one too many"), None),
            Err(IdentityError::Busy)
        ));
        drop(release);
        assert!(queued.await.is_ok(), "the queued request is served");
        // and the pool takes work again
        assert!(p.hash(Secret::new("later")).unwrap().await.is_ok());
    }
}

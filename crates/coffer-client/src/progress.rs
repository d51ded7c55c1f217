//! Progress reporting, kept abstract so the library has no terminal code:
//! the CLI draws bars with indicatif, other programs do what they like.

/// Receives byte counts as a transfer moves (stored, i.e. encrypted, bytes).
pub trait Progress: Sync {
    /// The transfer's total size.
    fn set_total(&self, total: u64);
    /// Bytes done so far (may go back when a transfer resumes).
    fn set_position(&self, position: u64);
    /// The transfer failed with `reason` and resumes on a new connection
    /// after `wait` (a batch job's log should say why it took longer).
    fn retrying(&self, _reason: &str, _wait: std::time::Duration) {}
    /// The transfer's file name, once known (a download learns it from
    /// the decrypted header): a better label than the id it started with.
    fn named(&self, _name: &str) {}
    /// What the transfer is doing now: [`Phase::Hashing`] a file before
    /// its upload (`put --skip-existing`), then sending or receiving. The
    /// byte counts that follow are of that phase.
    fn phase(&self, _phase: Phase) {}
}

/// What a transfer is doing, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading the plaintext to hash it (no network yet).
    Hashing,
    /// Encrypting and uploading.
    Sending,
    /// Downloading, decrypting and verifying.
    Receiving,
}

impl Phase {
    /// A short word for the phase.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Hashing => "hashing",
            Phase::Sending => "sending",
            Phase::Receiving => "receiving",
        }
    }
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn set_total(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
}

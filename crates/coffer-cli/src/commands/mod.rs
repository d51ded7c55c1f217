//! One module per subcommand.

pub mod client;
pub mod decrypt;
pub mod docs;
pub mod encrypt;
pub mod inspect;
pub mod keygen;
pub mod server;

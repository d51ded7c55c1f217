//! One module per subcommand.

pub mod decrypt;
pub mod encrypt;
pub mod inspect;
pub mod keygen;
pub mod server;

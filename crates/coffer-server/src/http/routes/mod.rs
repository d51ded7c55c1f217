//! One module per group of routes. Each handler parses (headers through
//! [`crate::codec`]), calls one operation of [`crate::service`], and
//! answers; nothing here decides anything.

pub mod files;
pub mod links;
pub mod requests;
pub mod session;
pub mod shares;
pub mod uploads;

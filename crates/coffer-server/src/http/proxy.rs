//! The PROXY protocol (v2, binary) from a TCP load balancer.
//!
//! Behind a TCP balancer every connection comes from the balancer's
//! address, so per-address limits and the audit log would see one client.
//! A balancer configured to send the PROXY protocol prefixes each
//! connection with the client's address. That header is believed only from
//! the addresses in `limits.proxy_protocol_from`: anyone else could claim
//! any address. From those addresses it is required (fail closed: a
//! connection without it is dropped, so a misconfigured balancer is noticed
//! at once rather than pooling every client under its address).
//!
//! Parsing is ppp's; this module reads exactly the header's bytes (the TLS
//! handshake follows on the same stream) and bounds its size and time.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2::{Addresses, Command, Header};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The fixed part: 12-byte signature, version/command, family, length.
const FIXED_LEN: usize = 16;
/// Addresses (at most 216 bytes, for Unix sockets) and TLVs balancers add
/// (AWS and GCP send a few dozen bytes); anything longer is refused.
const MAX_REST: usize = 1024;
/// How long a balancer may take to send the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection from a balancer was dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY v2 header from a balancer address: {0}")]
    Malformed(String),
    #[error("PROXY header longer than {MAX_REST} bytes")]
    TooLong,
    #[error("PROXY header not sent in time")]
    Timeout,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header from `stream` and returns the client address it names;
/// `balancer` for a `LOCAL` header (the balancer's own health checks) or an
/// address family without ports.
pub async fn client_address<S: AsyncRead + Unpin>(
    stream: &mut S,
    balancer: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    let bytes = tokio::time::timeout(HEADER_TIMEOUT, read_header(stream))
        .await
        .map_err(|_| ProxyError::Timeout)??;
    parse(&bytes, balancer)
}

async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, ProxyError> {
    let mut bytes = vec![0u8; FIXED_LEN];
    stream.read_exact(&mut bytes).await?;
    if bytes[..12] != *ppp::v2::PROTOCOL_PREFIX {
        return Err(ProxyError::Malformed("wrong signature".into()));
    }
    let rest = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if rest > MAX_REST {
        return Err(ProxyError::TooLong);
    }
    bytes.resize(FIXED_LEN + rest, 0);
    stream.read_exact(&mut bytes[FIXED_LEN..]).await?;
    Ok(bytes)
}

fn parse(bytes: &[u8], balancer: SocketAddr) -> Result<SocketAddr, ProxyError> {
    let header = Header::try_from(bytes).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(balancer);
    }
    Ok(match header.addresses {
        Addresses::IPv4(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
        Addresses::IPv6(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => balancer,
    })
}

#[cfg(test)]
mod tests {
    use ppp::v2::{Builder, IPv4, IPv6, Protocol, Version};

    use super::*;

    const BALANCER: &str = "10.0.0.2:40000";

    fn header(command: Command, addresses: Addresses) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    async fn read(bytes: &[u8]) -> Result<SocketAddr, ProxyError> {
        let mut stream = bytes;
        client_address(&mut stream, BALANCER.parse().unwrap()).await
    }

    #[tokio::test]
    async fn the_client_address_is_taken_and_nothing_past_the_header_is_read() {
        let v4 = IPv4::new([203, 0, 113, 7], [10, 0, 0, 9], 4444, 8443);
        let mut bytes = header(Command::Proxy, v4.into());
        bytes.extend_from_slice(b"\x16\x03\x01 TLS follows");
        let mut stream = bytes.as_slice();
        let got = client_address(&mut stream, BALANCER.parse().unwrap()).await;
        assert_eq!(got.unwrap(), "203.0.113.7:4444".parse().unwrap());
        assert_eq!(stream, b"\x16\x03\x01 TLS follows");

        let v6 = IPv6::new(
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
            "2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap(),
            5555,
            8443,
        );
        let got = read(&header(Command::Proxy, v6.into())).await.unwrap();
        assert_eq!(got, "[2001:db8::1]:5555".parse().unwrap());
        // The balancer's own health check.
        let got = read(&header(Command::Local, Addresses::Unspecified)).await;
        assert_eq!(got.unwrap(), BALANCER.parse().unwrap());
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        // A client speaking TLS straight away (the balancer sends no header).
        let tls_hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(matches!(
            read(&tls_hello).await,
            Err(ProxyError::Malformed(_))
        ));
        // Version 1 (text) is not accepted.
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.9 4444 8443\r\n";
        assert!(read(v1).await.is_err());
        // Truncated, and overlong.
        let v4 = IPv4::new([203, 0, 113, 7], [10, 0, 0, 9], 4444, 8443);
        let whole = header(Command::Proxy, v4.into());
        for cut in [5, 15, whole.len() - 1] {
            assert!(read(&whole[..cut]).await.is_err(), "cut at {cut}");
        }
        let mut long = whole[..FIXED_LEN].to_vec();
        long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(read(&long).await, Err(ProxyError::TooLong)));
        // A length too short for the addresses its family needs.
        let mut short = whole.clone();
        short[14..16].copy_from_slice(&4u16.to_be_bytes());
        short.truncate(FIXED_LEN + 4);
        assert!(matches!(read(&short).await, Err(ProxyError::Malformed(_))));
    }
}

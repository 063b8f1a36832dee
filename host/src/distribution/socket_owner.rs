//! Which local user owns the other end of a loopback TCP connection, from
//! the kernel's table of sockets (`/proc/net/tcp`, `/proc/net/tcp6`): the
//! port mapper keeps a name for the user whose node registered it first.

use std::net::{IpAddr, SocketAddr};

/// The uid owning the socket at `peer` connected to `local`, when this
/// machine's kernel says (Linux), and the peer is on this machine.
pub fn uid_of_peer(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let table = match peer.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    uid_in_table(&text, peer, local)
}

/// The uid of the row whose local address is `peer` and remote address is
/// `local`, in the kernel's text format.
fn uid_in_table(text: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (kernel_form(peer), kernel_form(local));
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (row_local, row_remote, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        (row_local.eq_ignore_ascii_case(&want_local)
            && row_remote.eq_ignore_ascii_case(&want_remote))
        .then(|| uid.parse().ok())
        .flatten()
    })
}

/// An address as the kernel's table writes it: the address's bytes as
/// native-endian 32-bit words in hex, a colon, the port in hex.
fn kernel_form(addr: SocketAddr) -> String {
    let words: Vec<[u8; 4]> = match addr.ip() {
        IpAddr::V4(v4) => vec![v4.octets()],
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|chunk| [chunk[0], chunk[1], chunk[2], chunk[3]])
            .collect(),
    };
    let address: String = words
        .iter()
        .map(|word| format!("{:08X}", u32::from_ne_bytes(*word)))
        .collect();
    format!("{address}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_of_the_kernels_table_is_found_by_both_ends() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:D431 0100007F:1111 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n";
        let peer: SocketAddr = "127.0.0.1:54321".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:4369".parse().expect("addr");
        if cfg!(target_endian = "little") {
            assert_eq!(uid_in_table(table, peer, local), Some(1000));
        }
        assert_eq!(uid_in_table(table, local, peer), None);
    }

    #[test]
    fn the_owner_of_a_live_connection_is_this_process_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server_side, peer) = listener.accept().expect("accept");
        let local = server_side.local_addr().expect("addr");
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(uid_of_peer(peer, local), Some(me));
        drop(client);
    }
}

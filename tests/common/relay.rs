//! A TCP relay on 127.0.0.1 to a local server that damages one answer: it flips a byte, cuts
//! the connection, or slows to a trickle, at a given offset of what the server sends back on
//! a connection. The server behind it is real; only the bytes in transit are changed or
//! delayed, as a faulty network would.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};

/// What happens to the answer at the offset.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The byte at the offset is inverted.
    Flip(usize),
    /// The connection is closed at the offset.
    Cut(usize),
    /// From the offset on, one byte is sent every 50 ms: never slow enough for a read to
    /// time out, and a file of a few KiB takes minutes.
    Trickle(usize),
}

/// Relays connections to `127.0.0.1:target_port` with `fault` applied to every connection's
/// answers; returns the relay's URL. The relay lives until the test process ends.
pub fn damaging_relay(target_port: u16, fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                continue;
            };
            let (client_in, server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client_in, server_out, None));
            std::thread::spawn(move || pump(server, client, Some(fault)));
        }
    });
    url
}

fn pump(mut from: TcpStream, mut to: TcpStream, fault: Option<Fault>) {
    let mut buffer = vec![0; 64 * 1024];
    let mut offset = 0;
    while let Ok(read) = from.read(&mut buffer) {
        if read == 0 {
            break;
        }
        let chunk = &mut buffer[..read];
        let mut end = read;
        match fault {
            Some(Fault::Flip(at)) if (offset..offset + read).contains(&at) => {
                chunk[at - offset] = !chunk[at - offset];
            }
            Some(Fault::Cut(at)) if offset + read > at => end = at.saturating_sub(offset),
            Some(Fault::Trickle(at)) if offset + read > at => {
                let fast = at.saturating_sub(offset);
                if to.write_all(&chunk[..fast]).is_err() {
                    break;
                }
                for byte in &chunk[fast..] {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if to.write_all(std::slice::from_ref(byte)).is_err() {
                        return;
                    }
                }
                offset += read;
                continue;
            }
            _ => {}
        }
        if to.write_all(&chunk[..end]).is_err() || end < read {
            break;
        }
        offset += read;
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

//! A loopback TCP proxy that can stop forwarding while keeping every connection open: from the
//! client's side the server then accepts connections and bytes but never answers, which is how a
//! storage stall or a black-holed network path looks (unlike a refused or reset connection).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// Whether bytes flow, and whether the proxy is closing.
#[derive(Default)]
struct Flow {
    paused: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    flow: Mutex<Flow>,
    changed: Condvar,
    /// Every socket either side opened, shut down when the proxy is dropped.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Shared {
    /// Blocks while paused; `false` once the proxy is closing.
    fn wait_until_flowing(&self) -> bool {
        let mut flow = self.flow.lock().unwrap();
        while flow.paused && !flow.closed {
            flow = self.changed.wait(flow).unwrap();
        }
        !flow.closed
    }

    fn set(&self, edit: impl FnOnce(&mut Flow)) {
        edit(&mut self.flow.lock().unwrap());
        self.changed.notify_all();
    }

    fn keep(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            self.sockets.lock().unwrap().push(clone);
        }
    }
}

/// Listens on 127.0.0.1 and forwards each connection to `upstream`, until dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TcpProxy {
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on loopback");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accept = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accept.flow.lock().unwrap().closed {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                accept.keep(&client);
                accept.keep(&server);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let shared = Arc::clone(&accept);
                    thread::spawn(move || pump(from, to, &shared));
                }
            }
        });
        TcpProxy { addr, shared }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding in both directions. Connections stay open and new ones are accepted; what
    /// arrives is held (the kernel acknowledges it) and never delivered until [`resume`].
    ///
    /// [`resume`]: TcpProxy::resume
    pub fn stop_forwarding(&self) {
        self.shared.set(|f| f.paused = true);
    }

    /// Delivers what was held and forwards again.
    pub fn resume(&self) {
        self.shared.set(|f| f.paused = false);
    }
}

impl Drop for TcpProxy {
    /// Closes every connection (both sides see EOF) and the listener.
    fn drop(&mut self) {
        self.shared.set(|f| f.closed = true);
        for socket in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so that it sees `closed` and releases the port.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to`, holding each chunk while paused; passes EOF on as a half-close.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                if shared.wait_until_flowing() {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
        };
        if !shared.wait_until_flowing() || to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

//! The kernel's floor under a WebSocket fan-out: the same number of loopback TCP
//! connections between two processes, with no WebSocket framing, JSON or async runtime.
//! A writer process writes one small frame to every connection; the measuring process
//! reads each with `epoll` on one thread, notes when it arrived and writes a small ack
//! back, which the writer reads and drops. What is left is system calls and the loopback
//! TCP stack, on the same cores, so it bounds what any server could do here with clients
//! that ack every push.
//!
//! The writer is the benchmark's own executable started again with [`WRITER_ENV`] set
//! (each process may hold at most 20,000 open files, so the two ends cannot share one).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to the number of connections) when the executable should run [`writer_main`].
pub const WRITER_ENV: &str = "CHORUS_BENCH_FLOOR_WRITER";
/// Bytes of one pushed frame: about a small group message's `message` frame.
pub const FRAME_BYTES: usize = 256;
/// Bytes of one ack: about a masked `{"type":"ack","msg_id":...}` frame.
pub const ACK_BYTES: usize = 48;
/// Longest any step waits.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the writer end when this process was started as one; returns otherwise.
pub fn run_writer_if_asked() {
    let Some(n) = std::env::var(WRITER_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    writer_main(n);
    std::process::exit(0);
}

/// Accepts `n` connections, then writes a frame to every one of them for each line read
/// from stdin, until stdin closes. A second thread reads and drops the acks.
fn writer_main(n: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("address").port());
    std::io::stdout().flush().expect("stdout");
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        s.set_nonblocking(true).expect("nonblocking");
        sockets.push(s);
    }
    let fds: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let reader_fds = fds.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let _ = Epoll::new(&reader_fds).each_readable(None, |fd| {
            // SAFETY: `fd` is an open socket owned by `sockets` for the process's life.
            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        });
    });
    let frame = [b'x'; FRAME_BYTES];
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        for &fd in &fds {
            write_all(fd, &frame);
        }
    }
    drop(sockets);
}

/// Writes all of `bytes` to the non-blocking socket `fd`, waiting for room if it is full.
fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer and `fd` an open socket.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if n == 0 || unsafe { libc::poll(&mut pfd, 1, TIMEOUT.as_millis() as i32) } <= 0 {
            return;
        }
    }
}

/// An epoll set over sockets, made once, before anything is timed (registering 10,000
/// sockets takes milliseconds).
#[derive(Debug)]
struct Epoll {
    fd: i32,
    /// Registered sockets that have not hit end of file or an error.
    open: usize,
}

impl Epoll {
    fn new(fds: &[i32]) -> Epoll {
        // SAFETY: plain epoll calls; the caller keeps `fds` open while the set is used.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0, "epoll_create1");
        for &fd in fds {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: as above.
            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        }
        Epoll {
            fd: ep,
            open: fds.len(),
        }
    }

    /// Calls `on_readable` for each readable socket as epoll reports them, until `stop`
    /// says so or (with `stop` None) every socket has hit end of file or an error.
    /// Returns false when `TIMEOUT` passed without any event.
    fn each_readable(
        &mut self,
        mut stop: Option<&mut dyn FnMut() -> bool>,
        mut on_readable: impl FnMut(i32),
    ) -> bool {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut quiet_since = Instant::now();
        loop {
            if let Some(stop) = stop.as_mut() {
                if stop() {
                    return true;
                }
            } else if self.open == 0 {
                return true;
            }
            if quiet_since.elapsed() > TIMEOUT {
                return false;
            }
            // SAFETY: `events` has room for its length.
            let k =
                unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), events.len() as i32, 50) };
            if k > 0 {
                quiet_since = Instant::now();
            }
            for e in &events[..k.max(0) as usize] {
                let fd = e.u64 as i32;
                if e.events & (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32 != 0 {
                    // SAFETY: `fd` is registered in our set.
                    unsafe {
                        libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut())
                    };
                    self.open -= 1;
                    continue;
                }
                on_readable(fd);
            }
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the set is ours.
        unsafe { libc::close(self.fd) };
    }
}

/// The measuring end: `n` connections to a writer process.
#[derive(Debug)]
pub struct Floor {
    writer: Child,
    /// A line here starts a round; closing it ends the writer.
    go: Option<ChildStdin>,
    clients: Vec<TcpStream>,
    /// Over `clients`.
    epoll: Epoll,
}

impl Floor {
    /// Starts the writer (this executable again) and connects `n` clients from 127.0.0.x
    /// source addresses, as the WebSocket clients do.
    pub fn start(n: usize) -> Floor {
        let exe = std::env::current_exe().expect("bench path");
        let mut writer = Command::new(exe)
            .env(WRITER_ENV, n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the floor's writer");
        let mut port = String::new();
        BufReader::new(writer.stdout.take().expect("stdout"))
            .read_line(&mut port)
            .expect("the writer's port");
        let port: u16 = port.trim().parse().expect("a port");
        let go = writer.stdin.take().expect("stdin");
        let clients = (0..n)
            .map(|i| {
                let source = Ipv4Addr::new(127, 0, 0, 1 + (i % 200) as u8);
                connect_from(source, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            })
            .collect::<Vec<TcpStream>>();
        let fds: Vec<i32> = clients.iter().map(|s| s.as_raw_fd()).collect();
        Floor {
            writer,
            go: Some(go),
            epoll: Epoll::new(&fds),
            clients,
        }
    }

    /// One round: has the writer push a frame to every connection and returns each
    /// connection's receipt time (ms after the go), sorted.
    pub fn round(&mut self) -> Vec<f64> {
        let want = self.clients.len();
        // Shared by the stop check and the read callback.
        let got = std::cell::Cell::new(0usize);
        let mut partial = std::collections::HashMap::<i32, usize>::new();
        let mut at = Vec::with_capacity(want);
        let ack = [b'a'; ACK_BYTES];
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        let go = self.go.as_mut().expect("the writer's stdin");
        writeln!(go).expect("tell the writer to go");
        go.flush().expect("flush");
        let mut done = || got.get() >= want;
        let finished = self.epoll.each_readable(Some(&mut done), |fd| {
            // SAFETY: `fd` belongs to `self.clients`, open for this call.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let have = partial.entry(fd).or_default();
            *have += n as usize;
            while *have >= FRAME_BYTES {
                *have -= FRAME_BYTES;
                at.push(start.elapsed().as_secs_f64() * 1e3);
                got.set(got.get() + 1);
                write_all(fd, &ack);
            }
        });
        assert!(finished, "the floor's round timed out");
        at.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        at
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.clients.clear();
        // Closing stdin ends the writer; kill it if it has not gone within a few seconds.
        drop(self.go.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.writer.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.writer.kill();
        let _ = self.writer.wait();
    }
}

/// A blocking-free client socket bound to `source` and connected to `to`.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let addr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = addr(source, 0);
        assert_eq!(
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len),
            0,
            "bind a loopback source address"
        );
        let SocketAddr::V4(to) = to else {
            unreachable!("loopback v4")
        };
        let remote = addr(*to.ip(), to.port());
        assert_eq!(
            libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len),
            0,
            "connect"
        );
        let s = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        s.set_nodelay(true).expect("nodelay");
        s.set_nonblocking(true).expect("nonblocking");
        s
    }
}

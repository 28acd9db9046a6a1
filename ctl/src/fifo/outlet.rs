//! The writing side of a consumer FIFO: lines go into the pipe, and an event is acknowledged
//! only once its whole line has been read out of the pipe.
//!
//! # How lines are counted
//! The outlet keeps one write end of the FIFO open for as long as it runs, across readers, so
//! the pipe is always the same kernel object and its unread byte count (`FIONREAD`) says
//! exactly how far the byte stream it wrote has been read, whoever read it:
//!
//! ```text
//!   written since the last drain: total bytes
//!   |<------- read out of the pipe ------->|<---- unread (FIONREAD) ---->|
//!   | line a | line b | line c | line d |  line e  | line f | line g |
//!                                      ^ read = total - unread
//!   a..d are acknowledged; e (partly read), f and g are not
//! ```
//!
//! # When a reader leaves
//! When the FIFO has no reader any more (a write fails with `EPIPE`, or `poll` reports
//! `POLLERR`), the outlet empties the pipe itself: it opens a read end of the same FIFO
//! (through `/proc/self/fd`, so a FIFO recreated under the same path is never mistaken for
//! it) and takes everything left with one `read` call, which the kernel serves atomically with
//! respect to other readers. Every byte before that suffix was read by someone, so those
//! lines are acknowledged; every line with a byte in the suffix goes back, whole, to the front
//! of the backlog for the next reader. A next reader that opened the FIFO in between, before
//! the drain, may have taken a prefix of what was left: it keeps those lines (they are
//! acknowledged, never written twice), and only a line it got part of is written again,
//! whole, after the part it got. The outlet cannot tell a part that reader took from a part
//! the departed reader read and dropped, and for the latter (and for any reader that opens
//! after the take-back) the whole line is what must follow; so a reader that opens in that
//! instant and reads mid-line sees the part, then the line (nothing is lost). A reader that
//! opens after the take-back gets clean lines.
//!
//! The write end is not closed on the way: a reader that is already there never sees an
//! early end-of-file. (Counting on `close` to discard the pipe, as an earlier version did,
//! wrote lines twice when the next reader opened the FIFO between the `EPIPE` and the close:
//! the pipe outlived the close, with the old lines still in it.)

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use diaspora_api::{Error, Event};

use super::pipe;
use crate::daemon::{log, stopping, Level};

/// What the outlet acknowledges once its line is read (an [`Event`]; tests use a recorder).
pub trait Acknowledge {
    /// Acknowledges it.
    fn acknowledge(&self) -> Result<(), Error>;
}

impl Acknowledge for Event {
    fn acknowledge(&self) -> Result<(), Error> {
        Event::acknowledge(self)
    }
}

/// Why lines could not be delivered.
pub enum Undelivered {
    /// The daemon is stopping.
    Stopping,
    /// The FIFO cannot be used.
    Failed(String),
}

/// The writing side of a consumer FIFO (see the module documentation).
pub struct Outlet<'a, E> {
    path: &'a Path,
    writer: Option<File>,
    /// Whether the FIFO had a reader when last looked at (for the log).
    connected: bool,
    /// Lines to write, oldest first, with their event.
    backlog: VecDeque<(E, String)>,
    /// Bytes of the front line already written.
    offset: usize,
    /// Lines written and not yet known to be read, with the byte count at their end.
    sent: VecDeque<(E, String, u64)>,
    /// Bytes written since the pipe was last emptied by the outlet.
    total: u64,
    /// Events acknowledged.
    acked: u64,
}

impl<'a, E: Acknowledge> Outlet<'a, E> {
    /// An outlet for FIFO `path` (opened once it has a reader).
    pub fn new(path: &'a Path) -> Self {
        Outlet {
            path,
            writer: None,
            connected: false,
            backlog: VecDeque::new(),
            offset: 0,
            sent: VecDeque::new(),
            total: 0,
            acked: 0,
        }
    }

    /// Queues a line (ending in a newline) for `event`.
    pub fn queue(&mut self, event: E, line: String) {
        self.backlog.push_back((event, line));
    }

    /// Events acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Events not acknowledged: queued, or written and not yet read.
    pub fn unacknowledged(&self) -> usize {
        self.sent.len() + self.backlog.len()
    }

    /// Whether lines were written that are not yet known to be read.
    pub fn has_unread(&self) -> bool {
        !self.sent.is_empty()
    }

    /// Writes the backlog; returns when it is empty.
    pub fn pump(&mut self) -> Result<(), Undelivered> {
        while let Some((_, line)) = self.backlog.front() {
            if stopping() {
                return Err(Undelivered::Stopping);
            }
            let Some(file) = self.writer.as_mut() else {
                match pipe::open_writer(self.path) {
                    Ok(Some(file)) => self.writer = Some(file),
                    Ok(None) => std::thread::sleep(Duration::from_millis(pipe::TICK_MS as u64)),
                    Err(e) => {
                        return Err(Undelivered::Failed(format!("cannot open for writing: {e}")))
                    }
                }
                continue;
            };
            let revents = match pipe::wait(file, libc::POLLOUT, pipe::TICK_MS) {
                Ok(0) => continue,
                Ok(revents) => revents,
                Err(e) => return Err(Undelivered::Failed(format!("poll failed: {e}"))),
            };
            if revents & libc::POLLERR != 0 {
                // No reader: take back what is left in the pipe, wait for the next one.
                self.no_reader();
                std::thread::sleep(Duration::from_millis(pipe::TICK_MS as u64));
                continue;
            }
            if !self.connected {
                self.connected = true;
                log(
                    Level::Debug,
                    format_args!("{}: reader connected", self.path.display()),
                );
            }
            match file.write(&line.as_bytes()[self.offset..]) {
                Ok(n) => {
                    self.offset += n;
                    self.total += n as u64;
                    if self.offset == line.len() {
                        self.offset = 0;
                        if let Some((event, line)) = self.backlog.pop_front() {
                            self.sent.push_back((event, line, self.total));
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.no_reader(),
                Err(e) => return Err(Undelivered::Failed(format!("write failed: {e}"))),
            }
            self.acknowledge_read();
        }
        self.acknowledge_read();
        Ok(())
    }

    /// Acknowledges what was read; when the FIFO has lost its reader, takes back what is
    /// left in the pipe and writes it to the next reader. For an idle outlet.
    pub fn tend(&mut self) -> Result<(), Undelivered> {
        self.acknowledge_read();
        let Some(file) = &self.writer else {
            return Ok(());
        };
        let lost_reader = matches!(pipe::wait(file, 0, 0), Ok(r) if r & libc::POLLERR != 0);
        if lost_reader && (self.has_unread() || self.offset > 0) {
            self.no_reader();
            return self.pump();
        }
        Ok(())
    }

    /// The FIFO has no reader: what was not read goes back to the front of the backlog.
    fn no_reader(&mut self) {
        self.acknowledge_read();
        let Some(writer) = &self.writer else { return };
        if self.sent.is_empty() && self.offset == 0 && self.total == 0 {
            self.connected = false;
            return;
        }
        let left = match pipe::drain(writer) {
            Ok(left) => Some(left),
            Err(e) => {
                log(
                    Level::Warn,
                    format_args!(
                        "{}: cannot empty the pipe ({e}); closing it instead",
                        self.path.display()
                    ),
                );
                None
            }
        };
        match left {
            // Everything before the suffix we took was read by someone.
            Some(left) => self.acknowledge_up_to(self.total.saturating_sub(left)),
            // Without a drain, the pipe is emptied by closing it (racy; see the module doc).
            None => self.writer = None,
        }
        if self
            .writer
            .as_ref()
            .is_some_and(|w| !pipe::still_named(w, self.path))
        {
            // The FIFO was replaced: the next reader opens the new one.
            self.writer = None;
        }
        if self.connected || !self.sent.is_empty() {
            log(
                Level::Warn,
                format_args!(
                    "{}: reader went away, {} line(s) it did not read go to the next one",
                    self.path.display(),
                    self.sent.len()
                ),
            );
        }
        self.connected = false;
        self.offset = 0;
        self.total = 0;
        while let Some((event, line, _)) = self.sent.pop_back() {
            self.backlog.push_front((event, line));
        }
    }

    /// Acknowledges the events whose lines were read out of the pipe.
    pub fn acknowledge_read(&mut self) {
        let Some(file) = &self.writer else { return };
        let Ok(unread) = pipe::unread_bytes(file) else {
            return;
        };
        self.acknowledge_up_to(self.total.saturating_sub(unread));
    }

    /// Acknowledges the events whose lines end at or before byte `read` of the stream.
    fn acknowledge_up_to(&mut self, read: u64) {
        while self.sent.front().is_some_and(|(_, _, end)| *end <= read) {
            if let Some((event, _, _)) = self.sent.pop_front() {
                match event.acknowledge() {
                    Ok(()) => self.acked += 1,
                    Err(e) => log(
                        Level::Error,
                        format_args!("{}: cannot acknowledge: {e}", self.path.display()),
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Real FIFOs, readers opened in this process at chosen moments.

    use super::*;
    use std::cell::RefCell;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    use std::rc::Rc;

    #[derive(Clone)]
    struct Recorder {
        name: String,
        acked: Rc<RefCell<Vec<String>>>,
    }

    impl Acknowledge for Recorder {
        fn acknowledge(&self) -> Result<(), Error> {
            self.acked.borrow_mut().push(self.name.clone());
            Ok(())
        }
    }

    fn fifo(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let path = dir.path().join("out");
        assert!(pipe::make_fifo(&path).expect("mkfifo"));
        path
    }

    fn reader(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .expect("open reader")
    }

    /// Reads what is in the pipe now.
    fn read_now(r: &mut File, max: usize) -> String {
        let mut buf = vec![0u8; max];
        match r.read(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => String::new(),
            Err(e) => panic!("read: {e}"),
        }
    }

    fn queue(outlet: &mut Outlet<'_, Recorder>, acked: &Rc<RefCell<Vec<String>>>, n: usize) {
        for i in 0..n {
            let name = format!("e{i}");
            let line = format!("{name}\n");
            outlet.queue(
                Recorder {
                    name,
                    acked: acked.clone(),
                },
                line,
            );
        }
    }

    type Acked = Rc<RefCell<Vec<String>>>;

    /// An outlet on a new FIFO with lines `e0`..`e{n-1}` written, a first reader that read
    /// exactly `first_read` and left; then `test` with the outlet, its acknowledgements and
    /// the FIFO's path.
    fn after_a_first_reader(
        n: usize,
        first_read: &str,
        test: impl FnOnce(&mut Outlet<'_, Recorder>, &Acked, &Path),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = fifo(&dir);
        let acked = Rc::new(RefCell::new(Vec::new()));
        let mut outlet = Outlet::new(&path);
        let mut first = reader(&path);
        queue(&mut outlet, &acked, n);
        assert!(outlet.pump().is_ok());
        assert_eq!(read_now(&mut first, first_read.len()), first_read);
        drop(first);
        test(&mut outlet, &acked, &path);
    }

    #[test]
    fn a_reader_that_opens_before_the_departed_readers_lines_are_taken_back_gets_them_once() {
        // The next reader opens the FIFO after the outlet found it without a reader and before
        // it took the lines back (the window of the old flaky test, held open here).
        after_a_first_reader(4, "e0\ne1\n", |outlet, acked, path| {
            let mut next = reader(path);
            outlet.no_reader();
            let mut got = read_now(&mut next, 1 << 16);
            assert!(outlet.pump().is_ok());
            got.push_str(&read_now(&mut next, 1 << 16));
            assert_eq!(got, "e2\ne3\n", "each line once, whole");
            outlet.acknowledge_read();
            assert_eq!(*acked.borrow(), ["e0", "e1", "e2", "e3"]);
        });
    }

    #[test]
    fn a_next_reader_that_took_part_of_the_rest_keeps_it_and_gets_the_remainder() {
        after_a_first_reader(5, "e0\n", |outlet, acked, path| {
            let mut next = reader(path);
            assert_eq!(read_now(&mut next, 6), "e1\ne2\n");
            outlet.no_reader();
            assert_eq!(*acked.borrow(), ["e0", "e1", "e2"]);
            assert!(outlet.pump().is_ok());
            assert_eq!(read_now(&mut next, 1 << 16), "e3\ne4\n");
        });
    }

    #[test]
    fn a_next_reader_that_took_part_of_a_line_before_the_take_back_gets_it_again_whole() {
        // The documented outcome of the one window the outlet cannot resolve (module doc).
        after_a_first_reader(4, "e0\n", |outlet, acked, path| {
            let mut next = reader(path);
            assert_eq!(read_now(&mut next, 4), "e1\ne");
            outlet.no_reader();
            assert_eq!(*acked.borrow(), ["e0", "e1"]);
            assert!(outlet.pump().is_ok());
            assert_eq!(read_now(&mut next, 1 << 16), "e2\ne3\n", "nothing lost");
            outlet.acknowledge_read();
            assert_eq!(*acked.borrow(), ["e0", "e1", "e2", "e3"]);
        });
    }

    #[test]
    fn a_line_the_departed_reader_read_half_of_goes_whole_to_the_next_one() {
        // The outlet is idle when the reader leaves mid-line; `tend` sees it gone.
        after_a_first_reader(3, "e0\ne", |outlet, acked, path| {
            // `tend` takes the lines back, then waits in `pump` for the next reader.
            let opener = {
                let path = path.to_owned();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    std::fs::File::open(&path).and_then(|mut f| {
                        let mut text = String::new();
                        let mut byte = [0u8; 1];
                        while text.matches('\n').count() < 2 && f.read(&mut byte)? == 1 {
                            text.push(char::from(byte[0]));
                        }
                        Ok(text)
                    })
                })
            };
            assert!(outlet.tend().is_ok());
            let text = opener.join().expect("reader thread").expect("read");
            assert_eq!(text, "e1\ne2\n");
            assert_eq!(acked.borrow()[0], "e0");
        });
    }

    #[test]
    fn a_fifo_recreated_under_the_same_path_is_not_drained_in_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = fifo(&dir);
        let acked = Rc::new(RefCell::new(Vec::new()));
        let mut outlet = Outlet::new(&path);
        let first = reader(&path);
        queue(&mut outlet, &acked, 2);
        assert!(outlet.pump().is_ok());
        drop(first);
        std::fs::remove_file(&path).expect("rm");
        assert!(pipe::make_fifo(&path).expect("mkfifo"));
        outlet.no_reader();
        assert!(
            acked.borrow().is_empty(),
            "nothing was read: nothing acknowledged"
        );
        assert_eq!(outlet.unacknowledged(), 2);
        // The lines go to the new FIFO's reader.
        let mut next = reader(&path);
        assert!(outlet.pump().is_ok());
        assert_eq!(read_now(&mut next, 1 << 16), "e0\ne1\n");
    }
}

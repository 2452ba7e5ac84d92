//! The `Frame` trait: what packet-processing code may do to a frame, independent of where it lives.
//!
//! Network-function logic (`process(frame, &state) -> Verdict`) is written against this trait so the same
//! code runs on AF_XDP frames in the UMEM (`cne::xsk::packet::Packet`), on AF_PACKET buffers, and on test
//! fixtures ([`VecFrame`]). Every operation is O(1) and allocation-free: the data window moves inside a
//! fixed buffer that has headroom in front (for encapsulation) and tailroom behind.
#![forbid(unsafe_code)]

/// A packet buffer with a movable data window.
pub trait Frame {
    /// The packet bytes, starting at the first byte of the Ethernet header.
    fn data(&self) -> &[u8];
    /// The packet bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Bytes free in front of the data (room to prepend headers).
    fn headroom(&self) -> usize;
    /// Bytes free behind the data (room to grow the tail).
    fn tailroom(&self) -> usize;
    /// Grows the data window by `n` bytes at the front and returns the whole new window (the first `n`
    /// bytes hold stale contents). `None`, with nothing changed, when the headroom is smaller than `n`.
    fn push_head(&mut self, n: usize) -> Option<&mut [u8]>;
    /// Removes `n` bytes from the front. `false`, with nothing changed, when the data is shorter than `n`.
    fn pull_head(&mut self, n: usize) -> bool;
    /// Sets the data length to `len` bytes. Shrinking always works; growing works within the tailroom
    /// (new bytes hold stale contents). `false`, with nothing changed, when `len` does not fit.
    fn set_len(&mut self, len: usize) -> bool;
    /// Length of the data in bytes.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the data is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A heap-backed frame for tests, fixtures and non-AF_XDP backends. Allocates once, in [`VecFrame::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecFrame {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecFrame {
    /// Default headroom, matching the UMEM frames' headroom.
    pub const DEFAULT_HEADROOM: usize = 256;
    /// Default total buffer size, matching 2048-byte UMEM frames.
    pub const DEFAULT_CAPACITY: usize = 2048;

    /// A frame holding a copy of `bytes` with `headroom` free bytes in front, in a buffer of
    /// `capacity` bytes (grown if `headroom + bytes.len()` does not fit).
    pub fn new(bytes: &[u8], headroom: usize, capacity: usize) -> Self {
        let cap = capacity.max(headroom + bytes.len());
        let mut buf = vec![0u8; cap];
        buf[headroom..headroom + bytes.len()].copy_from_slice(bytes);
        Self {
            buf,
            start: headroom,
            end: headroom + bytes.len(),
        }
    }

    /// A frame holding a copy of `bytes` with the default headroom and capacity.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::new(bytes, Self::DEFAULT_HEADROOM, Self::DEFAULT_CAPACITY)
    }

    /// Replaces the data with a copy of `bytes`, resetting the headroom to `headroom`.
    /// `false`, with nothing changed, when it does not fit in the buffer.
    pub fn reset(&mut self, bytes: &[u8], headroom: usize) -> bool {
        match headroom.checked_add(bytes.len()) {
            Some(end) if end <= self.buf.len() => {
                self.buf[headroom..end].copy_from_slice(bytes);
                self.start = headroom;
                self.end = end;
                true
            }
            _ => false,
        }
    }
}

impl Frame for VecFrame {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn headroom(&self) -> usize {
        self.start
    }
    fn tailroom(&self) -> usize {
        self.buf.len() - self.end
    }
    fn push_head(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        Some(&mut self.buf[self.start..self.end])
    }
    fn pull_head(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn set_len(&mut self, len: usize) -> bool {
        match self.start.checked_add(len) {
            Some(end) if end <= self.buf.len() => {
                self.end = end;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_moves_within_bounds() {
        let mut f = VecFrame::new(&[1, 2, 3, 4], 8, 16);
        assert_eq!(f.data(), &[1, 2, 3, 4]);
        assert_eq!((f.headroom(), f.tailroom()), (8, 4));
        let w = f.push_head(2).expect("room");
        w[0] = 9;
        w[1] = 9;
        assert_eq!(f.data(), &[9, 9, 1, 2, 3, 4]);
        assert!(f.push_head(7).is_none());
        assert_eq!(f.len(), 6);
        assert!(f.pull_head(4));
        assert_eq!(f.data(), &[3, 4]);
        assert!(!f.pull_head(3));
        assert!(f.set_len(1));
        assert_eq!(f.data(), &[3]);
        assert!(f.set_len(6));
        assert!(!f.set_len(7));
        assert!(f.reset(&[5; 3], 2));
        assert_eq!((f.data(), f.headroom()), (&[5u8, 5, 5][..], 2));
    }
}

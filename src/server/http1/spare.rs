//! Buffers a thread's connections hand back between requests, so that a busy connection does not allocate a read
//! and a write buffer for every request, and an idle one holds neither. A thread keeps at most [`KEEP`] of each
//! (with thread-per-core serving, the connections of one thread take turns with them). Header maps are kept the
//! same way: a map with room for a request's fields and the ones the proxy adds is two allocations too large for
//! the allocator's per-thread cache, and making and freeing one per request and per answer cost about 1.5k
//! instructions (`benches/profile/callgrind.sh`).

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderMap;

/// The most spare buffers of each kind a thread keeps.
const KEEP: usize = 16;

/// The size of a new read buffer.
pub(crate) const READ_SIZE: usize = 4 * 1024;

/// Write buffers that grew beyond this are not kept.
const WRITE_KEEP_MAX: usize = 32 * 1024;

/// Header maps that grew beyond this many fields are not kept.
const HEADERS_KEEP_MAX: usize = 64;

/// The room a new header map has: a request's usual fields plus the ones the proxy adds on the way upstream
/// (token, forwarding, trace), so that it is not grown.
const HEADERS_ROOM: usize = 24;

thread_local! {
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static HEADERS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty read buffer with room for at least [`READ_SIZE`] bytes.
pub(crate) fn read_buffer() -> BytesMut {
    READ.with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
}

/// Hands back an empty read buffer. It is kept only when nothing else still refers to its memory (the head of a
/// request that is still being served does) and it is of the usual size.
pub(crate) fn give_back_read(mut buf: BytesMut) {
    if !buf.is_empty() || !buf.try_reclaim(READ_SIZE) || buf.capacity() > 2 * READ_SIZE {
        return;
    }
    READ.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEEP {
            spare.push(buf);
        }
    });
}

/// An empty write buffer.
pub(crate) fn write_buffer() -> Vec<u8> {
    WRITE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(1024))
}

/// Hands back a write buffer.
pub(crate) fn give_back_write(mut buf: Vec<u8>) {
    if buf.capacity() > WRITE_KEEP_MAX {
        return;
    }
    buf.clear();
    WRITE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEEP {
            spare.push(buf);
        }
    });
}

/// An empty header map with room for at least `fields` fields.
pub(crate) fn header_map(fields: usize) -> HeaderMap {
    let map = HEADERS.with(|spare| spare.borrow_mut().pop());
    match map {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields.max(HEADERS_ROOM)),
    }
}

/// Hands back a header map that is done with (its fields are dropped here).
pub(crate) fn give_back_headers(mut map: HeaderMap) {
    if map.capacity() > HEADERS_KEEP_MAX {
        return;
    }
    map.clear();
    HEADERS.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEEP {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffer_comes_back_only_once_nothing_else_holds_its_memory() {
        let mut buf = read_buffer();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(buf.len()).freeze();
        let before = READ.with(|s| s.borrow().len());
        // `head` still shares the memory: nothing is kept.
        give_back_read(buf);
        assert_eq!(READ.with(|s| s.borrow().len()), before);
        drop(head);
        let mut again = read_buffer();
        again.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        drop(again.split_to(again.len()).freeze());
        give_back_read(again);
        assert_eq!(READ.with(|s| s.borrow().len()), before + 1);
        let reused = read_buffer();
        assert!(reused.is_empty() && reused.capacity() >= READ_SIZE);
    }

    #[test]
    fn header_maps_come_back_empty_with_their_room() {
        let mut map = header_map(4);
        assert!(map.capacity() >= HEADERS_ROOM);
        map.insert(http::header::HOST, http::HeaderValue::from_static("x"));
        give_back_headers(map);
        let again = header_map(4);
        assert!(again.is_empty() && again.capacity() >= HEADERS_ROOM);
        let mut big = HeaderMap::with_capacity(HEADERS_KEEP_MAX * 2);
        big.insert(http::header::HOST, http::HeaderValue::from_static("x"));
        let before = HEADERS.with(|s| s.borrow().len());
        give_back_headers(big);
        assert_eq!(
            HEADERS.with(|s| s.borrow().len()),
            before,
            "too large to keep"
        );
    }

    #[test]
    fn write_buffers_are_kept_cleared_and_bounded_in_size() {
        let mut buf = write_buffer();
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        give_back_write(buf);
        assert!(write_buffer().is_empty());
        let before = WRITE.with(|s| s.borrow().len());
        give_back_write(Vec::with_capacity(WRITE_KEEP_MAX + 1));
        assert_eq!(WRITE.with(|s| s.borrow().len()), before);
    }
}

//! The few nf_tables netlink messages a pod's start and stop need, built and parsed by hand:
//! set elements added and deleted, a chain added and deleted, tables and chains read, all in
//! batches the kernel applies as one transaction. The constants are those of
//! `linux/netfilter/nfnetlink.h` and `linux/netfilter/nf_tables.h`; what the messages mean is
//! in nft(8) and in libnftnl, whose encoding (`nft --debug=netlink`) this one matches.
//!
//! Everything here blocks, for microseconds: the kernel answers a batch while `send(2)`
//! runs, and a dump as it is read.

use std::io;
use std::os::fd::AsFd;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// linux/netfilter/nfnetlink.h
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_UNSPEC: u8 = 0;
/// The family of the main table this crate writes: `ip` (IPv4).
pub(super) const NFPROTO_IPV4: u8 = 2;
/// The family of its IPv6 masquerade table: `ip6`.
pub(super) const NFPROTO_IPV6: u8 = 10;

// linux/netfilter/nf_tables.h: message types.
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

// Attributes.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_USERDATA: u16 = 12;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;

/// libnftnl's user data: type-length-value records; type 0 is the comment of a chain or a
/// set element (`NFTNL_UDATA_CHAIN_COMMENT`, `NFTNL_UDATA_SET_ELEM_COMMENT`), kept with its
/// terminating NUL as nft writes it.
const UDATA_COMMENT: u8 = 0;

/// The most user data the kernel keeps (`NFT_USERDATA_MAXLEN`): a comment of up to 253
/// bytes fits, with its NUL and the record's two header bytes.
const USERDATA_MAX: usize = 256;

/// How long to wait for the next part of a dump before giving up.
const DUMP_TIMEOUT_MS: u16 = 5000;

/// One request: a netlink header, the nfnetlink header, attributes.
#[derive(Debug)]
pub(super) struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, family: u8) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by `finish`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.extend_from_slice(&[family, 0]); // nfgen_family, version (NFNETLINK_V0)
        buf.extend_from_slice(&0u16.to_be_bytes()); // res_id
        Message { buf }
    }

    /// Appends attribute `kind` holding `data`, padded to 4 bytes.
    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A string attribute, NUL-terminated as libnftnl sends it.
    fn str(&mut self, kind: u16, text: &str) -> &mut Self {
        let mut data = Vec::with_capacity(text.len() + 1);
        data.extend_from_slice(text.as_bytes());
        data.push(0);
        self.attr(kind, &data)
    }

    /// Opens a nested attribute; `end` closes it.
    fn nest(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end(&mut self, start: usize) {
        let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A set element: its key and, in a map, its data, both as the kernel stores them (each
/// field of a concatenation padded to 4 bytes), and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Element {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
    pub comment: Option<String>,
}

/// A chain as a dump lists it: its table, name and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub table: String,
    pub name: String,
    pub comment: Option<String>,
}

/// Equal to `add element FAMILY TABLE SET { KEY comment "C" : DATA, ... }`, failing with
/// EEXIST when a key is there already (`create element`).
pub(super) fn new_elements(family: u8, table: &str, set: &str, elements: &[Element]) -> Message {
    let mut m = Message::new(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, family);
    m.str(NFTA_SET_ELEM_LIST_TABLE, table)
        .str(NFTA_SET_ELEM_LIST_SET, set);
    let list = m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for element in elements {
        let item = m.nest(NFTA_LIST_ELEM);
        let key = m.nest(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, &element.key);
        m.end(key);
        if let Some(value) = &element.data {
            let data = m.nest(NFTA_SET_ELEM_DATA);
            m.attr(NFTA_DATA_VALUE, value);
            m.end(data);
        }
        if let Some(comment) = &element.comment {
            m.attr(NFTA_SET_ELEM_USERDATA, &comment_udata(comment));
        }
        m.end(item);
    }
    m.end(list);
    m
}

/// Equal to `delete element FAMILY TABLE SET { KEY, ... }`.
pub(super) fn del_elements<'a>(
    family: u8,
    table: &str,
    set: &str,
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Message {
    let mut m = Message::new(NFT_MSG_DELSETELEM, 0, family);
    m.str(NFTA_SET_ELEM_LIST_TABLE, table)
        .str(NFTA_SET_ELEM_LIST_SET, set);
    let list = m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for value in keys {
        let item = m.nest(NFTA_LIST_ELEM);
        let key = m.nest(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, value);
        m.end(key);
        m.end(item);
    }
    m.end(list);
    m
}

/// Equal to `add chain FAMILY TABLE NAME { comment "C"; }`: a regular chain, taken as it is
/// when it exists.
pub(super) fn new_chain(family: u8, table: &str, name: &str, comment: &str) -> Message {
    let mut m = Message::new(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family);
    m.str(NFTA_CHAIN_TABLE, table)
        .str(NFTA_CHAIN_NAME, name)
        .attr(NFTA_CHAIN_USERDATA, &comment_udata(comment));
    m
}

/// Equal to `delete chain FAMILY TABLE NAME`: ENOENT when there is none.
pub(super) fn del_chain(family: u8, table: &str, name: &str) -> Message {
    let mut m = Message::new(NFT_MSG_DELCHAIN, 0, family);
    m.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, name);
    m
}

/// Equal to `delete set FAMILY TABLE NAME`, with its elements: ENOENT when there is none,
/// EBUSY while a rule still refers to it.
pub(super) fn del_set(family: u8, table: &str, name: &str) -> Message {
    let mut m = Message::new(NFT_MSG_DELSET, 0, family);
    m.str(NFTA_SET_TABLE, table).str(NFTA_SET_NAME, name);
    m
}

/// Equal to `delete table FAMILY NAME`, with everything in it: ENOENT when there is none.
pub(super) fn del_table(family: u8, name: &str) -> Message {
    let mut m = Message::new(NFT_MSG_DELTABLE, 0, family);
    m.str(NFTA_TABLE_NAME, name);
    m
}

/// A netlink socket of the netfilter family, bound to the network namespace it was made in.
#[derive(Debug)]
pub(super) struct Conn {
    socket: Socket,
    /// The next sequence number: answers to older requests (left unread when a call was cut
    /// short) are recognised by theirs and skipped.
    seq: u32,
    buf: Vec<u8>,
}

/// A batch the kernel refused: which of its messages (by index) and why.
#[derive(Debug)]
pub(super) struct Refused {
    pub index: Option<usize>,
    pub source: io::Error,
}

impl From<io::Error> for Refused {
    fn from(source: io::Error) -> Self {
        Refused {
            index: None,
            source,
        }
    }
}

impl Conn {
    /// A socket in the calling thread's network namespace.
    pub(super) fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        // Acks carry only the header of the request they answer, not all of it.
        socket.set_cap_ack(true)?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Ok(Conn {
            socket,
            seq,
            buf: Vec::new(),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `messages` as one batch, one transaction: all of them take effect or none.
    pub(super) fn transact(&mut self, messages: Vec<Message>) -> Result<(), Refused> {
        if messages.is_empty() {
            return Ok(());
        }
        let begin = self.next_seq();
        let mut batch = batch_marker(NFNL_MSG_BATCH_BEGIN).finish(begin);
        let count = messages.len();
        for mut message in messages {
            let flags = u16::from_ne_bytes([message.buf[6], message.buf[7]]) | NLM_F_ACK;
            message.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
            let seq = self.next_seq();
            batch.extend_from_slice(&message.finish(seq));
        }
        batch.extend_from_slice(&batch_marker(NFNL_MSG_BATCH_END).finish(self.next_seq()));
        self.socket.send(&batch, 0)?;

        // The kernel processed the batch inside send(2): every answer is queued already.
        let mut acked = vec![false; count];
        let mut refused = None;
        loop {
            match self.recv(false) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err.into()),
            }
            for (kind, seq, payload) in messages_in(&self.buf) {
                // Answers to the batch markers (the whole batch refused) have no index.
                let offset = seq.wrapping_sub(begin) as usize;
                if kind != NLMSG_ERROR || offset > count + 1 {
                    continue;
                }
                let index = (1..=count).contains(&offset).then(|| offset - 1);
                if let Some(index) = index {
                    acked[index] = true;
                }
                let errno = error_code(payload);
                if errno != 0 && refused.is_none() {
                    refused = Some(Refused {
                        index,
                        source: io::Error::from_raw_os_error(errno),
                    });
                }
            }
        }
        match refused {
            Some(refused) => Err(refused),
            None if acked.iter().all(|&a| a) => Ok(()),
            None => Err(io::Error::other("the kernel did not answer every message").into()),
        }
    }

    /// Equal to `nft list chains FAMILY`: every chain of the family, in every table.
    pub(super) fn chains(&mut self, family: u8) -> io::Result<Vec<Chain>> {
        let m = Message::new(NFT_MSG_GETCHAIN, NLM_F_DUMP, family);
        let mut chains = Vec::new();
        self.dump(m, |attrs| chains.push(parse_chain(attrs)))?;
        Ok(chains)
    }

    /// Equal to `nft list sets FAMILY`: the table and name of every set (and map) of the
    /// family.
    pub(super) fn sets(&mut self, family: u8) -> io::Result<Vec<(String, String)>> {
        let m = Message::new(NFT_MSG_GETSET, NLM_F_DUMP, family);
        let mut sets = Vec::new();
        self.dump(m, |attrs| {
            let (mut table, mut name) = (String::new(), String::new());
            for (kind, value) in attributes(attrs) {
                match kind {
                    NFTA_SET_TABLE => table = c_string(value),
                    NFTA_SET_NAME => name = c_string(value),
                    _ => {}
                }
            }
            sets.push((table, name));
        })?;
        Ok(sets)
    }

    /// Equal to `nft list chain FAMILY TABLE NAME`, without its rules: one request, one
    /// answer. `None` when there is no such chain (or table).
    pub(super) fn chain(
        &mut self,
        family: u8,
        table: &str,
        name: &str,
    ) -> io::Result<Option<Chain>> {
        // Not a dump: the kernel answers with the chain, then the ack asked for here ends it.
        let mut m = Message::new(NFT_MSG_GETCHAIN, NLM_F_ACK, family);
        m.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, name);
        let mut found = None;
        match self.dump(m, |attrs| found = Some(parse_chain(attrs))) {
            Ok(()) => Ok(found),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Equal to `nft list set FAMILY TABLE SET`: its elements. ENOENT when there is no such
    /// set (or table).
    pub(super) fn elements(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
    ) -> io::Result<Vec<Element>> {
        let mut m = Message::new(NFT_MSG_GETSETELEM, NLM_F_DUMP, family);
        m.str(NFTA_SET_ELEM_LIST_TABLE, table)
            .str(NFTA_SET_ELEM_LIST_SET, set);
        let mut elements = Vec::new();
        self.dump(m, |attrs| {
            for (kind, list) in attributes(attrs) {
                if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
                    continue;
                }
                for (_, item) in attributes(list) {
                    let mut element = Element {
                        key: Vec::new(),
                        data: None,
                        comment: None,
                    };
                    for (kind, value) in attributes(item) {
                        match kind {
                            NFTA_SET_ELEM_KEY => element.key = data_value(value),
                            NFTA_SET_ELEM_DATA => element.data = Some(data_value(value)),
                            NFTA_SET_ELEM_USERDATA => element.comment = udata_comment(value),
                            _ => {}
                        }
                    }
                    elements.push(element);
                }
            }
        })?;
        Ok(elements)
    }

    /// Sends a dump request (or a get with an ack) and hands the attributes of each answer
    /// to `each`, until the kernel says it is done.
    fn dump(&mut self, message: Message, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let seq = self.next_seq();
        self.socket.send(&message.finish(seq), 0)?;
        loop {
            self.recv(true)?;
            for (kind, got, payload) in messages_in(&self.buf) {
                if got != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        return match error_code(payload) {
                            0 => Ok(()),
                            errno => Err(io::Error::from_raw_os_error(errno)),
                        };
                    }
                    _ if payload.len() >= NFGENMSG_LEN => each(&payload[NFGENMSG_LEN..]),
                    _ => {}
                }
            }
        }
    }

    /// Reads one datagram into `self.buf`; without `wait`, WouldBlock when none is queued.
    fn recv(&mut self, wait: bool) -> io::Result<()> {
        if wait {
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            let ready =
                poll(&mut fds, PollTimeout::from(DUMP_TIMEOUT_MS)).map_err(io::Error::from)?;
            if ready == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from the kernel's nf_tables",
                ));
            }
        }
        // The kernel sizes dump datagrams to the reader's buffer, up to 32 KiB and more.
        const SIZE: usize = 64 * 1024;
        self.buf.clear();
        self.buf.reserve(SIZE);
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        let len = self.socket.recv(&mut self.buf, flags | libc::MSG_TRUNC)?;
        if len > self.buf.len() {
            return Err(io::Error::other(format!(
                "a netlink answer of {len} bytes did not fit {} bytes",
                self.buf.len()
            )));
        }
        Ok(())
    }
}

/// A chain from the attributes of a `NFT_MSG_NEWCHAIN` answer.
fn parse_chain(attrs: &[u8]) -> Chain {
    let mut chain = Chain {
        table: String::new(),
        name: String::new(),
        comment: None,
    };
    for (kind, value) in attributes(attrs) {
        match kind {
            NFTA_CHAIN_TABLE => chain.table = c_string(value),
            NFTA_CHAIN_NAME => chain.name = c_string(value),
            NFTA_CHAIN_USERDATA => chain.comment = udata_comment(value),
            _ => {}
        }
    }
    chain
}

fn batch_marker(kind: u16) -> Message {
    let mut m = Message::new(0, 0, NFPROTO_UNSPEC);
    // Batch markers are nfnetlink's own messages: no subsystem in the type, and the
    // subsystem the batch is for in res_id.
    m.buf[4..6].copy_from_slice(&kind.to_ne_bytes());
    m.buf[18..20].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    m
}

/// The messages in a datagram: (type, sequence number, payload).
fn messages_in(mut buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, seq, payload))
    })
}

/// The attributes in `buf`: (type without flags, value).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        if len < 4 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        let value = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((kind, value))
    })
}

fn align(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// The errno of an NLMSG_ERROR payload (0 for an ack).
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map_or(libc::EPROTO, |b| -i32::from_ne_bytes(b))
}

/// The bytes of an `NFTA_DATA_VALUE` inside `nest`.
fn data_value(nest: &[u8]) -> Vec<u8> {
    attributes(nest)
        .find(|&(kind, _)| kind == NFTA_DATA_VALUE)
        .map(|(_, value)| value.to_vec())
        .unwrap_or_default()
}

fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// A comment as libnftnl's user data record, NUL-terminated as nft writes it.
fn comment_udata(comment: &str) -> Vec<u8> {
    // Callers check lengths; this only keeps a record from being cut mid-way.
    let text = &comment.as_bytes()[..comment.len().min(USERDATA_MAX - 3)];
    let mut data = Vec::with_capacity(text.len() + 3);
    data.push(UDATA_COMMENT);
    data.push(u8::try_from(text.len() + 1).unwrap_or(u8::MAX));
    data.extend_from_slice(text);
    data.push(0);
    data
}

/// The comment in a libnftnl user data blob, if it has one.
fn udata_comment(mut data: &[u8]) -> Option<String> {
    while data.len() >= 2 {
        let (kind, len) = (data[0], usize::from(data[1]));
        let value = data.get(2..2 + len)?;
        if kind == UDATA_COMMENT {
            return Some(c_string(value));
        }
        data = &data[2 + len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip_as_nft_writes_them() {
        // `nft --debug=netlink`: userdata = { \x00\x08owner/x\x00 }
        assert_eq!(comment_udata("owner/x"), b"\x00\x08owner/x\x00");
        assert_eq!(
            udata_comment(b"\x01\x01\x05\x00\x08owner/x\x00").as_deref(),
            Some("owner/x")
        );
        let long = "x".repeat(253);
        assert_eq!(comment_udata(&long).len(), USERDATA_MAX);
        assert_eq!(udata_comment(&comment_udata(&long)), Some(long));
    }

    #[test]
    fn messages_are_padded_and_nested() {
        let m = new_elements(
            NFPROTO_IPV4,
            "t",
            "s",
            &[Element {
                key: vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0],
                data: None,
                comment: None,
            }],
        );
        let bytes = m.finish(7);
        assert_eq!(bytes.len() % 4, 0);
        let (kind, seq, payload) = messages_in(&bytes).next().expect("one message");
        assert_eq!(kind, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM);
        assert_eq!(seq, 7);
        let attrs: Vec<_> = attributes(&payload[NFGENMSG_LEN..]).collect();
        assert_eq!(attrs[0], (NFTA_SET_ELEM_LIST_TABLE, &b"t\0"[..]));
        assert_eq!(attrs[1], (NFTA_SET_ELEM_LIST_SET, &b"s\0"[..]));
        let (_, item) = attributes(attrs[2].1).next().expect("an element");
        let (kind, key) = attributes(item).next().expect("a key");
        assert_eq!(kind, NFTA_SET_ELEM_KEY);
        assert_eq!(data_value(key), vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
    }
}

//! A terminal for the sandboxed process (`kiln run -t`), made as runc makes it: inside the
//! container, from its own devpts instance, so `tty` names `/dev/pts/0` there and nothing of the
//! host's terminals is reachable. The child opens `/dev/ptmx`, opens the peer through the master
//! itself (`TIOCGPTPEER`: no path lookup in /dev/pts that a process of the container could
//! race), makes it its controlling terminal and stdio, and sends the master to kiln over a unix
//! socket (SCM_RIGHTS). kiln copies between the master and the user's terminal.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rustix::io::Errno;

/// The two ends of the socket the master travels on: kiln's and the child's.
pub fn channel() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((a, b))
}

/// kiln's side: waits for the master the child sends on `sock` (an error once the child is
/// gone without sending one).
pub fn receive(sock: &OwnedFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    // Room for a control message, aligned as cmsghdr wants.
    let mut cmsg = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is valid; every pointer set below names a buffer of this frame
    // that outlives the call, with its true length.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: recvmsg(2) on a socket we own, into the buffers described by `msg`.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CMSG_FIRSTHDR reads the header `recvmsg` filled in; `msg` is alive.
    let hdr = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if n == 0 || hdr.is_null() {
        return Err(std::io::Error::other(
            "the container's process ended before its terminal was made",
        ));
    }
    // SAFETY: `hdr` points into `cmsg`, which the kernel filled with a complete header.
    let (level, kind) = unsafe { ((*hdr).cmsg_level, (*hdr).cmsg_type) };
    if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
        return Err(std::io::Error::other(
            "unexpected message on the terminal socket",
        ));
    }
    // SAFETY: an SCM_RIGHTS message carries at least one descriptor, now ours (the kernel
    // installed it in this process, close-on-exec); read unaligned, as CMSG_DATA may not be.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(hdr).cast::<i32>()) };
    // SAFETY: the descriptor was just received and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The child's side, between fork and exec once the container's /dev/pts is mounted: makes
/// the terminal, its peer stdin, stdout, stderr and the controlling terminal of the session
/// (the child leads one already), gives it to `uid`, and sends the master on `sock`. Raw system
/// calls only, on stack buffers: this runs in the forked child of a multi-threaded program.
pub(crate) fn open_in_child(sock: i32, uid: u32) -> Result<(), Errno> {
    let last =
        || Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    // SAFETY (every call below): plain system calls on integer descriptors this process owns
    // and on buffers of this frame with their true sizes.
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return Err(last());
        }
        let unlock: libc::c_int = 0;
        if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(last());
        }
        let peer = libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
        if peer < 0 {
            return Err(last());
        }
        // The tty group (5), as docker's /dev/pts/N; the user alone where 5 is not mapped
        // (rootless). Failure leaves it root's, which the open descriptors do not need.
        if libc::fchown(peer, uid, 5) < 0 {
            libc::fchown(peer, uid, u32::MAX);
        }
        for target in 0..3 {
            if libc::dup2(peer, target) < 0 {
                return Err(last());
            }
        }
        if peer > 2 {
            libc::close(peer);
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(last());
        }
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // Room for one descriptor's control message, aligned as cmsghdr wants.
        let mut space = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let hdr = libc::CMSG_FIRSTHDR(&msg);
        (*hdr).cmsg_level = libc::SOL_SOCKET;
        (*hdr).cmsg_type = libc::SCM_RIGHTS;
        (*hdr).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<i32>(), master);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(last());
        }
        libc::close(master);
    }
    Ok(())
}

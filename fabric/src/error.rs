//! Errors: one variant per failing `fi_*` call, each carrying the errno and `fi_strerror` text;
//! completions that failed carry the provider errno and `fi_cq_strerror` text as well.

use std::ffi::CStr;
use std::fmt;

use fabric_sys as sys;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A libfabric errno with its `fi_strerror` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiErrno {
    /// The positive errno (`FI_E*` / POSIX value) the call returned negated.
    pub errno: i32,
    /// `fi_strerror(errno)`.
    pub text: String,
}

impl FiErrno {
    /// Builds from a libfabric return code (negative errno, or a positive one).
    pub fn from_ret(ret: isize) -> Self {
        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX);
        FiErrno {
            errno,
            text: strerror(errno),
        }
    }

    /// True for `-FI_EAGAIN`.
    pub fn is_again(&self) -> bool {
        self.errno == sys::FI_EAGAIN as i32
    }

    /// True when the return code `ret` is `-FI_EAGAIN` (or `FI_EAGAIN`). Hot paths (an empty
    /// CQ poll, a full send queue) check this first: building a [`FiErrno`] looks up its
    /// `fi_strerror` text (gettext) and allocates, which cost an empty CQ poll more than the
    /// poll itself.
    pub fn is_again_ret(ret: isize) -> bool {
        ret.unsigned_abs() == sys::FI_EAGAIN as usize
    }
}

impl fmt::Display for FiErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.text, self.errno)
    }
}

/// `fi_strerror` as an owned string.
pub fn strerror(errno: i32) -> String {
    // SAFETY: fi_strerror accepts any int and returns a pointer to a static NUL-terminated
    // string (or NULL, handled).
    let p = unsafe { sys::fi_strerror(errno) };
    if p.is_null() {
        return format!("unknown error {errno}");
    }
    // SAFETY: non-NULL, NUL-terminated, static storage.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A completion that finished with an error (`fi_cq_readerr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "operation {op_id} failed: {} (errno {}); provider errno {prov_errno}: {prov_text}",
    err.text,
    err.errno
)]
pub struct CompletionError {
    /// The caller's op id of the failed operation.
    pub op_id: u64,
    /// The libfabric errno of the entry with its text.
    pub err: FiErrno,
    /// Provider-specific errno (`fi_cq_err_entry.prov_errno`).
    pub prov_errno: i32,
    /// `fi_cq_strerror` text for `prov_errno`.
    pub prov_text: String,
    /// Completion flags of the entry (`FI_SEND`, `FI_READ`, ...).
    pub flags: u64,
    /// Bytes transferred before the failure, as the provider reports them.
    pub len: usize,
}

/// Every error of the safe layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `fi_getinfo` failed (`-FI_ENODATA`: no provider matched the hints).
    #[error("fi_getinfo failed for provider {provider:?}: {err}")]
    Getinfo {
        /// The provider asked for, if any.
        provider: Option<String>,
        /// errno and text.
        err: FiErrno,
    },
    /// `fi_allocinfo`/`fi_dupinfo` returned NULL (out of memory).
    #[error("{call} returned NULL (out of memory)")]
    InfoAlloc {
        /// `fi_allocinfo` or `fi_dupinfo`.
        call: &'static str,
    },
    /// `fi_fabric` failed.
    #[error("fi_fabric failed: {0}")]
    Fabric(FiErrno),
    /// `fi_domain` failed.
    #[error("fi_domain failed: {0}")]
    Domain(FiErrno),
    /// `fi_cq_open` failed.
    #[error("fi_cq_open failed: {0}")]
    CqOpen(FiErrno),
    /// `fi_control(FI_GETWAIT)` on a CQ failed.
    #[error("fi_control(FI_GETWAIT) failed: {0}")]
    GetWait(FiErrno),
    /// `fi_trywait` failed with an error other than `-FI_EAGAIN`.
    #[error("fi_trywait failed: {0}")]
    TryWait(FiErrno),
    /// `fi_cq_read` failed with an error other than `-FI_EAGAIN` / `-FI_EAVAIL`.
    #[error("fi_cq_read failed: {0}")]
    CqRead(FiErrno),
    /// `fi_cq_readerr` failed.
    #[error("fi_cq_readerr failed: {0}")]
    CqReadErr(FiErrno),
    /// `fi_av_open` failed.
    #[error("fi_av_open failed: {0}")]
    AvOpen(FiErrno),
    /// `fi_av_insert` failed or inserted nothing.
    #[error("fi_av_insert failed: {0}")]
    AvInsert(FiErrno),
    /// `fi_av_remove` failed.
    #[error("fi_av_remove failed: {0}")]
    AvRemove(FiErrno),
    /// `fi_endpoint` failed.
    #[error("fi_endpoint failed: {0}")]
    Endpoint(FiErrno),
    /// `fi_ep_bind` failed (binding a CQ or an AV).
    #[error("fi_ep_bind({what}) failed: {err}")]
    EpBind {
        /// "cq" or "av".
        what: &'static str,
        /// errno and text.
        err: FiErrno,
    },
    /// `fi_enable` failed.
    #[error("fi_enable failed: {0}")]
    Enable(FiErrno),
    /// `fi_getname` failed.
    #[error("fi_getname failed: {0}")]
    Getname(FiErrno),
    /// `fi_mr_reg` failed.
    #[error("fi_mr_reg of {len} bytes failed: {err}")]
    MrReg {
        /// Length of the buffer.
        len: usize,
        /// errno and text.
        err: FiErrno,
    },
    /// `fi_mr_bind` failed.
    #[error("fi_mr_bind failed: {0}")]
    MrBind(FiErrno),
    /// `fi_mr_enable` failed.
    #[error("fi_mr_enable failed: {0}")]
    MrEnable(FiErrno),
    /// `fi_send` failed.
    #[error("fi_send failed: {0}")]
    Send(FiErrno),
    /// `fi_recv` failed.
    #[error("fi_recv failed: {0}")]
    Recv(FiErrno),
    /// `fi_read` / `fi_readmsg` failed.
    #[error("{call} failed: {err}")]
    Read {
        /// `fi_read` or `fi_readmsg`.
        call: &'static str,
        /// errno and text.
        err: FiErrno,
    },
    /// `fi_write` / `fi_writemsg` failed.
    #[error("{call} failed: {err}")]
    Write {
        /// `fi_write` or `fi_writemsg`.
        call: &'static str,
        /// errno and text.
        err: FiErrno,
    },
    /// A post returned `-FI_EAGAIN`: the queue is full; drive progress (read the CQ) and retry.
    #[error("{call} returned -FI_EAGAIN: queue full, read the CQ to drive progress and retry")]
    Again {
        /// The call that would block.
        call: &'static str,
    },
    /// An argument was refused before calling libfabric.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// An operation used more regions than the provider allows per operation.
    #[error("{what}: {count} regions, but the provider allows at most {limit} per operation")]
    TooManyRegions {
        /// Which side ("local iov" / "rma iov").
        what: &'static str,
        /// Regions asked.
        count: usize,
        /// `tx_attr.iov_limit` or `tx_attr.rma_iov_limit`.
        limit: usize,
    },
    /// A memory-registration rule of the provider's `mr_mode` was not honoured (or is not
    /// supported by this layer, e.g. `FI_MR_RAW`).
    #[error("memory registration: {0}")]
    MrPolicy(#[from] crate::mr_policy::PolicyError),
    /// A peer address was malformed or belongs to another provider.
    #[error("address: {0}")]
    Address(#[from] crate::address::AddressError),
}

impl Error {
    /// True when the operation may simply be retried after reading the CQ (`-FI_EAGAIN`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Again { .. })
    }
}

/// Maps a post return code: 0 -> Ok, `-FI_EAGAIN` -> [`Error::Again`], other -> `f(errno)`.
pub(crate) fn post_result(
    ret: isize,
    call: &'static str,
    f: impl FnOnce(FiErrno) -> Error,
) -> Result<()> {
    if ret == 0 {
        return Ok(());
    }
    if FiErrno::is_again_ret(ret) {
        Err(Error::Again { call })
    } else {
        Err(f(FiErrno::from_ret(ret)))
    }
}

/// Maps a plain `int` return code: 0 (or positive) -> Ok, negative -> `f(errno)`.
pub(crate) fn check(ret: i32, f: impl FnOnce(FiErrno) -> Error) -> Result<()> {
    if ret >= 0 {
        Ok(())
    } else {
        Err(f(FiErrno::from_ret(ret as isize)))
    }
}

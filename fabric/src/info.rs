//! [`Hints`] in, [`Info`] (an owned `fi_info` list) out, with typed [`Capabilities`].

use std::ffi::{CStr, CString};
use std::ptr;

use fabric_sys as sys;

use crate::error::{Error, FiErrno, Result};
use crate::flags;
use crate::mr_policy::MrPolicy;

/// Threading level (`fi_threading`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// `FI_THREAD_UNSPEC`
    Unspec,
    /// `FI_THREAD_SAFE`: any thread may use any object concurrently.
    Safe,
    /// `FI_THREAD_DOMAIN`: the application serialises access to all objects of a domain.
    Domain,
    /// `FI_THREAD_COMPLETION`
    Completion,
    /// `FI_THREAD_ENDPOINT`
    Endpoint,
    /// A value this layer does not name (e.g. `FI_THREAD_FID` on 1.x).
    Other(u32),
}

impl Threading {
    fn raw(self) -> sys::fi_threading {
        match self {
            Threading::Unspec => sys::FI_THREAD_UNSPEC,
            Threading::Safe => sys::FI_THREAD_SAFE,
            Threading::Domain => sys::FI_THREAD_DOMAIN,
            Threading::Completion => sys::FI_THREAD_COMPLETION,
            Threading::Endpoint => sys::FI_THREAD_ENDPOINT,
            Threading::Other(v) => v as sys::fi_threading,
        }
    }

    #[allow(clippy::unnecessary_cast)]
    fn from_raw(v: sys::fi_threading) -> Self {
        match v {
            sys::FI_THREAD_UNSPEC => Threading::Unspec,
            sys::FI_THREAD_SAFE => Threading::Safe,
            sys::FI_THREAD_DOMAIN => Threading::Domain,
            sys::FI_THREAD_COMPLETION => Threading::Completion,
            sys::FI_THREAD_ENDPOINT => Threading::Endpoint,
            other => Threading::Other(other as u32),
        }
    }
}

/// Progress model (`fi_progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `FI_PROGRESS_UNSPEC`
    Unspec,
    /// `FI_PROGRESS_AUTO`: the provider progresses by itself (but see the README: on tcp;ofi_rxm
    /// and shm the target must still read its CQ).
    Auto,
    /// `FI_PROGRESS_MANUAL`: progress happens only inside libfabric calls (CQ reads).
    Manual,
    /// A value this layer does not name.
    Other(u32),
}

impl Progress {
    fn raw(self) -> sys::fi_progress {
        match self {
            Progress::Unspec => sys::FI_PROGRESS_UNSPEC,
            Progress::Auto => sys::FI_PROGRESS_AUTO,
            Progress::Manual => sys::FI_PROGRESS_MANUAL,
            Progress::Other(v) => v as sys::fi_progress,
        }
    }

    #[allow(clippy::unnecessary_cast)]
    fn from_raw(v: sys::fi_progress) -> Self {
        match v {
            sys::FI_PROGRESS_UNSPEC => Progress::Unspec,
            sys::FI_PROGRESS_AUTO => Progress::Auto,
            sys::FI_PROGRESS_MANUAL => Progress::Manual,
            other => Progress::Other(other as u32),
        }
    }
}

/// Typed `fi_getinfo` hints. Always `FI_EP_RDM` with an `FI_AV_TABLE`.
#[derive(Debug, Clone)]
pub struct Hints {
    /// Provider name (`"tcp;ofi_rxm"`, `"shm"`); `None` lets libfabric choose (honours
    /// `FI_PROVIDER`).
    pub provider: Option<String>,
    /// Domain name filter. Note: tcp;ofi_rxm 1.17 ignores it (`"lo"` still returns `eth0`);
    /// use [`Hints::source`] (`"127.0.0.1"`) to stay on loopback.
    pub domain: Option<String>,
    /// Fabric name.
    pub fabric: Option<String>,
    /// Local source address or host name (`fi_getinfo(node, NULL, FI_SOURCE)`), e.g.
    /// `"127.0.0.1"` keeps tcp on loopback with an ephemeral port. Ignored when `None`.
    pub source: Option<String>,
    /// Capability bits; default `FI_MSG | FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ |
    /// FI_REMOTE_WRITE`.
    pub caps: u64,
    /// `mr_mode` bits the application supports; default [`MrPolicy::REQUESTED`]. The provider
    /// returns the subset it needs.
    pub mr_mode: u64,
    /// Threading; default [`Threading::Domain`].
    pub threading: Threading,
    /// Data progress; `None` = provider default.
    pub data_progress: Option<Progress>,
    /// Control progress; `None` = provider default.
    pub control_progress: Option<Progress>,
    /// Use the layer's own `fi_context2` storage for every operation even when the provider
    /// does not demand `FI_CONTEXT`/`FI_CONTEXT2` (tests exercise that path with it).
    pub force_context_storage: bool,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            provider: None,
            domain: None,
            fabric: None,
            source: None,
            caps: flags::MSG
                | flags::RMA
                | flags::READ
                | flags::WRITE
                | flags::REMOTE_READ
                | flags::REMOTE_WRITE,
            mr_mode: MrPolicy::REQUESTED,
            threading: Threading::Domain,
            data_progress: None,
            control_progress: None,
            force_context_storage: false,
        }
    }
}

impl Hints {
    /// Default hints for `provider`.
    pub fn provider(provider: &str) -> Self {
        Hints {
            provider: Some(provider.to_owned()),
            ..Hints::default()
        }
    }

    /// Sets the local source address (`FI_SOURCE`).
    pub fn with_source(mut self, source: &str) -> Self {
        self.source = Some(source.to_owned());
        self
    }

    /// Sets the domain name.
    pub fn with_domain(mut self, domain: &str) -> Self {
        self.domain = Some(domain.to_owned());
        self
    }
}

/// An owned `fi_info` list (Drop = `fi_freeinfo`).
pub struct Info {
    head: *mut sys::fi_info,
    force_context: bool,
}

// SAFETY: an fi_info list is plain heap data owned by this value; libfabric keeps no reference
// to it and has no thread affinity, so moving it to another thread is fine. It is not Sync-shared
// mutably: only &self getters read it.
unsafe impl Send for Info {}
// SAFETY: all &self methods only read the list.
unsafe impl Sync for Info {}

impl Info {
    /// `fi_getinfo` with `hints`. `-FI_ENODATA` (no match) is [`Error::Getinfo`] with errno 61.
    pub fn get(hints: &Hints) -> Result<Info> {
        // SAFETY: fi_allocinfo has no preconditions; NULL is handled.
        let h = unsafe { sys::fi_allocinfo() };
        if h.is_null() {
            return Err(Error::InfoAlloc {
                call: "fi_allocinfo",
            });
        }
        let guard = Info {
            head: h,
            force_context: false,
        };
        // SAFETY: `h` and its sub-attributes were allocated by fi_allocinfo and are exclusively
        // ours; strings are strdup'ed because fi_freeinfo frees them with free().
        unsafe {
            (*h).caps = hints.caps;
            (*h).mode = flags::CONTEXT | flags::CONTEXT2;
            (*(*h).ep_attr).type_ = sys::FI_EP_RDM;
            let d = &mut *(*h).domain_attr;
            d.mr_mode = hints.mr_mode as i32 as _;
            d.threading = hints.threading.raw();
            d.av_type = sys::FI_AV_TABLE;
            if let Some(p) = hints.data_progress {
                sys::diaspora_fi_domain_attr_set_data_progress(d, p.raw());
            }
            if let Some(p) = hints.control_progress {
                d.control_progress = p.raw();
            }
            if let Some(name) = &hints.domain {
                d.name = strdup(name)?;
            }
            let f = &mut *(*h).fabric_attr;
            if let Some(name) = &hints.provider {
                f.prov_name = strdup(name)?;
            }
            if let Some(name) = &hints.fabric {
                f.name = strdup(name)?;
            }
        }
        let node = match &hints.source {
            Some(s) => Some(
                CString::new(s.as_str())
                    .map_err(|_nul| Error::Invalid(format!("source {s:?} contains NUL")))?,
            ),
            None => None,
        };
        let (node_ptr, flags) = match &node {
            Some(n) => (n.as_ptr(), flags::SOURCE),
            None => (ptr::null(), 0),
        };
        let mut out: *mut sys::fi_info = ptr::null_mut();
        // SAFETY: valid hints and out pointer; node is NULL or a NUL-terminated string that
        // outlives the call; NULL service.
        let rc = unsafe {
            sys::fi_getinfo(
                sys::fi_version(),
                node_ptr,
                ptr::null(),
                flags,
                guard.head,
                &mut out,
            )
        };
        if rc != 0 || out.is_null() {
            return Err(Error::Getinfo {
                provider: hints.provider.clone(),
                err: FiErrno::from_ret(if rc == 0 { -61 } else { rc as isize }),
            });
        }
        Ok(Info {
            head: out,
            force_context: hints.force_context_storage,
        })
    }

    /// Capabilities of every entry, in the provider's order of preference.
    pub fn entries(&self) -> Vec<Capabilities> {
        let mut v = Vec::new();
        let mut p = self.head;
        while !p.is_null() {
            // SAFETY: p walks the list we own; each entry is valid until fi_freeinfo.
            unsafe {
                v.push(Capabilities::read(p));
                p = (*p).next;
            }
        }
        v
    }

    /// Capabilities of the first entry (the one [`crate::Fabric::open`] uses).
    pub fn caps(&self) -> Capabilities {
        // SAFETY: head is non-NULL (checked in `get`) and owned.
        unsafe { Capabilities::read(self.head) }
    }

    /// An owned copy of the first entry alone (`fi_dupinfo`).
    pub(crate) fn dup_first(&self) -> Result<Info> {
        // SAFETY: head is a valid fi_info; fi_dupinfo copies only that entry (next = NULL).
        let d = unsafe { sys::fi_dupinfo(self.head) };
        if d.is_null() {
            return Err(Error::InfoAlloc { call: "fi_dupinfo" });
        }
        Ok(Info {
            head: d,
            force_context: self.force_context,
        })
    }

    pub(crate) fn force_context(&self) -> bool {
        self.force_context
    }

    /// The raw head of the list. Ownership stays with `self`: do not free it, do not use it
    /// after `self` is dropped.
    pub fn as_raw(&self) -> *mut sys::fi_info {
        self.head
    }
}

impl Drop for Info {
    fn drop(&mut self) {
        // SAFETY: head came from fi_getinfo/fi_allocinfo/fi_dupinfo and is freed exactly once.
        unsafe { sys::fi_freeinfo(self.head) }
    }
}

impl std::fmt::Debug for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

fn strdup(s: &str) -> Result<*mut std::os::raw::c_char> {
    let c = CString::new(s).map_err(|_nul| Error::Invalid(format!("name {s:?} contains NUL")))?;
    // SAFETY: c is a valid NUL-terminated string; strdup returns malloc'ed memory or NULL.
    let p = unsafe { libc::strdup(c.as_ptr()) };
    if p.is_null() {
        return Err(Error::InfoAlloc { call: "strdup" });
    }
    Ok(p)
}

/// What a provider entry offers (copied out of the `fi_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `fabric_attr.prov_name`, e.g. `"tcp;ofi_rxm"`.
    pub provider: String,
    /// `fabric_attr.name`.
    pub fabric_name: String,
    /// `domain_attr.name`.
    pub domain_name: String,
    /// `caps` bits.
    pub caps: u64,
    /// `mode` bits the provider requires (`FI_CONTEXT`, `FI_CONTEXT2`, ...).
    pub mode: u64,
    /// `domain_attr.mr_mode` bits the application must honour.
    pub mr_mode: u64,
    /// `domain_attr.threading`.
    pub threading: Threading,
    /// `domain_attr.control_progress`.
    pub control_progress: Progress,
    /// `domain_attr.data_progress`.
    pub data_progress: Progress,
    /// `tx_attr.inject_size`.
    pub inject_size: usize,
    /// `ep_attr.max_msg_size`.
    pub max_msg_size: usize,
    /// `tx_attr.size`.
    pub tx_size: usize,
    /// `rx_attr.size`.
    pub rx_size: usize,
    /// `tx_attr.iov_limit`: local regions per operation.
    pub tx_iov_limit: usize,
    /// `rx_attr.iov_limit`.
    pub rx_iov_limit: usize,
    /// `tx_attr.rma_iov_limit`: remote regions per RMA operation.
    pub rma_iov_limit: usize,
    /// `domain_attr.mr_iov_limit`.
    pub mr_iov_limit: usize,
    /// `domain_attr.mr_key_size` (bytes).
    pub mr_key_size: usize,
}

impl Capabilities {
    /// True if the provider requires `FI_CONTEXT` or `FI_CONTEXT2` storage per operation.
    pub fn needs_context(&self) -> bool {
        self.mode & (flags::CONTEXT | flags::CONTEXT2) != 0
    }

    /// # Safety
    /// `p` must be a valid `fi_info` whose attribute pointers are valid or NULL.
    unsafe fn read(p: *const sys::fi_info) -> Capabilities {
        // SAFETY: the caller guarantees `p` is valid; each attr pointer is checked for NULL.
        unsafe {
            let i = &*p;
            let fa = i.fabric_attr.as_ref();
            let da = i.domain_attr.as_ref();
            let tx = i.tx_attr.as_ref();
            let rx = i.rx_attr.as_ref();
            let ep = i.ep_attr.as_ref();
            Capabilities {
                provider: fa.map(|f| cstr(f.prov_name)).unwrap_or_default(),
                fabric_name: fa.map(|f| cstr(f.name)).unwrap_or_default(),
                domain_name: da.map(|d| cstr(d.name)).unwrap_or_default(),
                caps: i.caps,
                mode: i.mode,
                mr_mode: da.map(|d| u64::from(d.mr_mode as u32)).unwrap_or(0),
                threading: da
                    .map(|d| Threading::from_raw(d.threading))
                    .unwrap_or(Threading::Unspec),
                control_progress: da
                    .map(|d| Progress::from_raw(d.control_progress))
                    .unwrap_or(Progress::Unspec),
                data_progress: da
                    // SAFETY: d is a valid domain_attr (the caller's contract).
                    .map(|d| Progress::from_raw(sys::diaspora_fi_domain_attr_get_data_progress(d)))
                    .unwrap_or(Progress::Unspec),
                inject_size: tx.map(|t| t.inject_size).unwrap_or(0),
                max_msg_size: ep.map(|e| e.max_msg_size).unwrap_or(0),
                tx_size: tx.map(|t| t.size).unwrap_or(0),
                rx_size: rx.map(|r| r.size).unwrap_or(0),
                tx_iov_limit: tx.map(|t| t.iov_limit).unwrap_or(1),
                rx_iov_limit: rx.map(|r| r.iov_limit).unwrap_or(1),
                rma_iov_limit: tx.map(|t| t.rma_iov_limit).unwrap_or(1),
                mr_iov_limit: da.map(|d| d.mr_iov_limit).unwrap_or(1),
                mr_key_size: da.map(|d| d.mr_key_size).unwrap_or(8),
            }
        }
    }
}

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libfabric strings in fi_info are NUL-terminated and live as long as the info.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

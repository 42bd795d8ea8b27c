//! From a request line to (repository, service): the only paths the gate answers.
//!
//! Hazard: a path that reaches the filesystem is a traversal. Nothing from the URL is
//! ever joined to a path: the first segment must be a declared repository's name
//! (optionally with `.git`), the rest must be one of three fixed endpoints, and any
//! percent-escape, empty or dot segment, or extra segment is answered 404 before a
//! name is even looked up. Dumb-HTTP object paths are not served at all.

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `GET info/refs?service=git-upload-pack`: refs for a fetch (after refreshing).
    AdvertiseUpload,
    /// `GET info/refs?service=git-receive-pack`: refs for a push (after refreshing).
    AdvertiseReceive,
    /// `POST git-upload-pack`: a fetch round.
    UploadPack,
    /// `POST git-receive-pack`: a push.
    ReceivePack,
}

/// A request the gate serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The repository name (declared).
    pub repo: &'a str,
    /// The endpoint.
    pub service: Service,
}

/// Why a request is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServed {
    /// 404: not a gate path, or not a declared repository.
    NotFound,
    /// 405: a gate path with the wrong method.
    Method,
}

/// Maps method, path and query to a route, given the declared names.
pub fn route<'a>(
    method: &str,
    path: &'a str,
    query: Option<&str>,
    declared: impl Fn(&str) -> bool,
) -> Result<Route<'a>, NotServed> {
    if path.contains('%') || path.contains('\\') || !path.starts_with('/') {
        return Err(NotServed::NotFound);
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let (name, endpoint) = match segments.as_slice() {
        [name, "info", "refs"] => (*name, "info/refs"),
        [name, endpoint @ ("git-upload-pack" | "git-receive-pack")] => (*name, *endpoint),
        _ => return Err(NotServed::NotFound),
    };
    let repo = name.strip_suffix(".git").filter(|n| declared(n)).unwrap_or(name);
    if !crate::settings::valid_name(repo) || !declared(repo) {
        return Err(NotServed::NotFound);
    }
    let service = match (endpoint, query) {
        ("info/refs", Some("service=git-upload-pack")) => Service::AdvertiseUpload,
        ("info/refs", Some("service=git-receive-pack")) => Service::AdvertiseReceive,
        ("info/refs", _) => return Err(NotServed::NotFound),
        ("git-upload-pack", _) => Service::UploadPack,
        _ => Service::ReceivePack,
    };
    let want = if matches!(service, Service::AdvertiseUpload | Service::AdvertiseReceive) {
        "GET"
    } else {
        "POST"
    };
    if method != want {
        return Err(NotServed::Method);
    }
    Ok(Route { repo, service })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, query: Option<&str>) -> Result<Route<'static>, NotServed> {
        let path: &'static str = Box::leak(path.to_string().into_boxed_str());
        route(method, path, query, |n| n == "demo" || n == "other.git")
    }

    #[test]
    fn the_three_endpoints_of_declared_repositories_are_served() {
        let up = Some("service=git-upload-pack");
        assert_eq!(
            check("GET", "/demo.git/info/refs", up).unwrap().service,
            Service::AdvertiseUpload
        );
        assert_eq!(
            check("GET", "/demo/info/refs", Some("service=git-receive-pack")).unwrap().service,
            Service::AdvertiseReceive
        );
        assert_eq!(
            check("POST", "/demo.git/git-upload-pack", None).unwrap().service,
            Service::UploadPack
        );
        assert_eq!(
            check("POST", "/demo.git/git-receive-pack", None).unwrap().service,
            Service::ReceivePack
        );
        // A declared name that itself ends in .git is found with or without the suffix.
        assert_eq!(check("POST", "/other.git/git-upload-pack", None).unwrap().repo, "other.git");
        assert_eq!(
            check("POST", "/other.git.git/git-upload-pack", None).unwrap().repo,
            "other.git"
        );
    }

    #[test]
    fn traversal_undeclared_and_dumb_paths_are_not_found() {
        let up = Some("service=git-upload-pack");
        for path in [
            "/../demo.git/info/refs",
            "/demo.git/../demo.git/info/refs",
            "/%2e%2e/demo.git/info/refs",
            "/demo%2egit/info/refs",
            "//demo.git/info/refs",
            "/demo.git//info/refs",
            "demo.git/info/refs",
            "/etc/passwd",
            "/demo.git/objects/info/packs",
            "/demo.git/HEAD",
            "/nope.git/info/refs",
            "/.git/info/refs",
            "/..git/info/refs",
            "/demo.git/info/refs/",
            "/demo.git\\..\\x/info/refs",
        ] {
            assert_eq!(check("GET", path, up), Err(NotServed::NotFound), "{path}");
        }
        assert_eq!(check("GET", "/demo.git/info/refs", None), Err(NotServed::NotFound));
        assert_eq!(
            check("GET", "/demo.git/info/refs", Some("service=git-shell")),
            Err(NotServed::NotFound)
        );
        assert_eq!(check("GET", "/demo.git/git-upload-pack", None), Err(NotServed::Method));
        assert_eq!(check("POST", "/demo.git/info/refs", up), Err(NotServed::Method));
    }
}

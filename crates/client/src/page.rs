//! Where the next page of a Capsule listing is: its `Link rel="next"` (the page itself is
//! [`super::ListingPage`]).

use url::Url;

/// The `rel="next"` target of an RFC 8288 `Link` header, if present and a valid URL.
pub fn next_link(header: &str) -> Option<Url> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        if is_next { Url::parse(target).ok() } else { None }
    })
}

/// The next page's URL with every query parameter of the current request that the server's
/// link left out (`perPage`, `since`, `embed`, `status`: the docs' own example keeps only
/// `page`). Parameters the link does carry win.
pub(crate) fn with_own_params(mut next: Url, current: &Url) -> Url {
    let present: Vec<String> = next.query_pairs().map(|(k, _)| k.into_owned()).collect();
    let missing: Vec<(String, String)> = current
        .query_pairs()
        .filter(|(k, _)| k != "page" && !present.iter().any(|p| p == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !missing.is_empty() {
        next.query_pairs_mut().extend_pairs(missing);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_among_several_relations() {
        let h = r#"<https://api.capsulecrm.com/api/v2/parties?page=1>; rel="prev", <https://api.capsulecrm.com/api/v2/parties?page=3>; rel="next""#;
        assert_eq!(next_link(h).unwrap().as_str(), "https://api.capsulecrm.com/api/v2/parties?page=3");
        assert!(next_link(r#"<https://x/y?page=1>; rel="prev""#).is_none());
        assert!(next_link("garbage").is_none());
    }

    #[test]
    fn re_adds_missing_params_but_keeps_the_links_own() {
        let current = Url::parse("http://h/api/v2/parties?perPage=100&since=2020-01-01T00:00:00Z&page=1").unwrap();
        let next = Url::parse("http://h/api/v2/parties?page=2").unwrap();
        let merged = with_own_params(next, &current);
        let pairs: Vec<(String, String)> = merged.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        assert!(pairs.contains(&("page".into(), "2".into())));
        assert!(pairs.contains(&("perPage".into(), "100".into())));
        assert!(pairs.contains(&("since".into(), "2020-01-01T00:00:00Z".into())));
        assert_eq!(pairs.iter().filter(|(k, _)| k == "page").count(), 1);

        let full = Url::parse("http://h/api/v2/parties?perPage=50&page=2").unwrap();
        let merged = with_own_params(full, &current);
        assert_eq!(merged.query_pairs().filter(|(k, _)| k == "perPage").count(), 1);
        assert!(merged.query_pairs().any(|(k, v)| k == "perPage" && v == "50"));
    }
}

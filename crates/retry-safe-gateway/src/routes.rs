//! The routing table: a path pattern (matchit's syntax) and a method to a route.

use crate::config::Route;
use http::Method;
use toml::Spanned;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The index of the first route matching path and method.
    Found(usize),
    /// Routes match the path, none the method: these methods would do.
    MethodNotAllowed(Vec<Method>),
    /// No route matches the path.
    NotFound,
}

/// One path pattern's routes, in file order.
#[derive(Debug, Default)]
struct Candidates(Vec<(Option<Vec<Method>>, usize)>);

/// Every route's pattern, looked up in one radix tree.
#[derive(Debug)]
pub(crate) struct Table {
    router: matchit::Router<Candidates>,
}

impl Table {
    /// The table of `routes`; `Err((index, why))` names the first route whose pattern is refused.
    pub(crate) fn build(routes: &[Spanned<Route>]) -> Result<Self, (usize, String)> {
        let mut patterns: Vec<(&str, Candidates, usize)> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let route = route.get_ref();
            let methods = (!route.methods.is_empty()).then(|| {
                route
                    .methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.get_ref().as_bytes()).ok())
                    .collect()
            });
            let path = route.path.get_ref().as_str();
            match patterns.iter_mut().find(|(p, ..)| *p == path) {
                Some((_, c, _)) => c.0.push((methods, i)),
                None => patterns.push((path, Candidates(vec![(methods, i)]), i)),
            }
        }
        let mut router = matchit::Router::new();
        for (path, candidates, first) in patterns {
            router
                .insert(path, candidates)
                .map_err(|e| (first, e.to_string()))?;
        }
        Ok(Self { router })
    }

    /// The route of `method` and `path`.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Lookup {
        let Ok(matched) = self.router.at(path) else {
            return Lookup::NotFound;
        };
        let candidates = &matched.value.0;
        let serves = |ms: &Option<Vec<Method>>| {
            ms.as_ref().is_none_or(|ms| {
                ms.contains(method) || (method == Method::HEAD && ms.contains(&Method::GET))
            })
        };
        match candidates.iter().find(|(ms, _)| serves(ms)) {
            Some((_, i)) => Lookup::Found(*i),
            None => Lookup::MethodNotAllowed(
                candidates
                    .iter()
                    .flat_map(|(ms, _)| ms.iter().flatten().cloned())
                    .collect(),
            ),
        }
    }
}

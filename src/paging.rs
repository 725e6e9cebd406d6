//! Keyset (cursor) paging for the staff lists. A page starts just after or
//! just before the row its cursor names, in the list's own order, so the
//! last page costs what the first does and rows added meanwhile do not
//! shift what the next page shows.

/// Where a page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageStart<C> {
    /// The rows after the cursor's row: the next page.
    After(C),
    /// The rows before it: the previous page.
    Before(C),
    /// The last page.
    Last,
}

/// What a page link carries for [`PageStart::Last`], in its "before"
/// parameter (no cursor reads like it).
pub const LAST: &str = "end";

impl<C> PageStart<C> {
    /// The cursor (none: from the far end), and whether the page is found
    /// walking backwards.
    pub fn parts(&self) -> (Option<&C>, bool) {
        match self {
            PageStart::After(c) => (Some(c), false),
            PageStart::Before(c) => (Some(c), true),
            PageStart::Last => (None, true),
        }
    }

    /// [`parts`](Self::parts) with the cursor turned into the store's key.
    pub fn keyed<K>(&self, key: impl FnOnce(&C) -> K) -> (Option<K>, bool) {
        let (cursor, backwards) = self.parts();
        (cursor.map(key), backwards)
    }
}

/// Rows a page's query asks for: one more than it shows tells whether
/// the list goes on.
pub fn rows_to_fetch(limit: usize) -> i64 {
    i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// One page of a list and the cursors of its neighbours.
#[derive(Debug)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub prev: Option<C>,
    pub next: Option<C>,
}

impl<T, C> Default for Page<T, C> {
    fn default() -> Self {
        Page {
            items: Vec::new(),
            prev: None,
            next: None,
        }
    }
}

impl<T, C> Page<T, C> {
    /// A page from the rows a query found: up to `limit + 1` of them
    /// (one more tells that the list goes on), walking from the cursor in
    /// list order, or in reverse for [`PageStart::Before`].
    pub fn from_rows(
        mut rows: Vec<T>,
        limit: usize,
        start: Option<&PageStart<C>>,
        cursor: impl Fn(&T) -> C,
    ) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let backwards = start.is_some_and(|s| s.parts().1);
        if backwards {
            rows.reverse();
        }
        let (first, last) = (rows.first().map(&cursor), rows.last().map(&cursor));
        // Past the far end there is more when the query found more; back
        // towards where we came from there is more whenever we came from
        // somewhere.
        let (prev, next) = if backwards {
            let at_end = matches!(start, Some(PageStart::Last));
            (first.filter(|_| more), last.filter(|_| !at_end))
        } else {
            (first.filter(|_| start.is_some()), last.filter(|_| more))
        };
        Page {
            items: rows,
            prev,
            next,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U, C> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            prev: self.prev,
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(rows: &[u32], start: Option<PageStart<u32>>) -> (Vec<u32>, Option<u32>, Option<u32>) {
        let p = Page::from_rows(rows.to_vec(), 3, start.as_ref(), |r| *r);
        (p.items, p.prev, p.next)
    }

    #[test]
    fn first_page_has_only_a_next() {
        assert_eq!(page(&[1, 2, 3, 4], None), (vec![1, 2, 3], None, Some(3)));
        assert_eq!(page(&[1, 2], None), (vec![1, 2], None, None));
    }

    #[test]
    fn a_page_after_a_cursor_links_back() {
        let after = Some(PageStart::After(3));
        assert_eq!(
            page(&[4, 5, 6, 7], after.clone()),
            (vec![4, 5, 6], Some(4), Some(6))
        );
        assert_eq!(page(&[4, 5], after), (vec![4, 5], Some(4), None));
    }

    #[test]
    fn a_page_before_a_cursor_is_put_back_in_list_order() {
        // Found walking backwards from 7: 6, 5, 4 and one more.
        let before = Some(PageStart::Before(7));
        assert_eq!(
            page(&[6, 5, 4, 3], before.clone()),
            (vec![4, 5, 6], Some(4), Some(6))
        );
        // Back at the top: nothing before.
        assert_eq!(page(&[3, 2, 1], before), (vec![1, 2, 3], None, Some(3)));
    }

    #[test]
    fn the_last_page_links_only_back() {
        // Found walking backwards from the end: 9, 8, 7 and one more.
        assert_eq!(
            page(&[9, 8, 7, 6], Some(PageStart::Last)),
            (vec![7, 8, 9], Some(7), None)
        );
        assert_eq!(
            page(&[2, 1], Some(PageStart::Last)),
            (vec![1, 2], None, None)
        );
    }

    #[test]
    fn an_empty_page_links_nowhere() {
        assert_eq!(page(&[], Some(PageStart::After(9))), (vec![], None, None));
    }
}

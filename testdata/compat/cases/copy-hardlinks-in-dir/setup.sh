ln context/dir/one context/dir/two

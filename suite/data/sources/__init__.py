"""One module per dataset family; every module here is imported by ``suite.data.catalog``,
so dropping a file with a ``@register``-ed ``DatasetSource`` in this folder adds a dataset."""

"""ACME's fab plugins: an example of how a third party ships plugins for fab.

Nothing is imported here on purpose. fab lists plugins from entry-point metadata alone and imports
one plugin's module (``acme_fab.accelerator``, ``acme_fab.logger``, ...) the first time that plugin
is asked for, so this package must stay empty: anything imported here would be imported for every
plugin.
"""

"""pytest hooks of the omnillm budget plugin.

Registered through the ``pytest11`` entry point ``omnillm``; disable with ``-p no:omnillm``.
"""

"""``python -m control_room.qserver``: print the shipped permissions file's path."""

from control_room.qserver import permissions_path

print(permissions_path())

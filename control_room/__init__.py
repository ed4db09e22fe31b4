"""The control-room application: what ``asirp control-room`` starts and runs.

It sits above every other package (it starts the Tango device, the embedded tiled server, the
simulated beamline and a RunEngine, and runs the adaptive plans); nothing imports it. The
package import is light (``asirp`` loads :mod:`control_room.command` whenever it builds its
parser): the loop itself is :func:`control_room.loop.run_control_room`, and the scores against
the simulation's ground truth are in :mod:`control_room.evaluation`.
"""

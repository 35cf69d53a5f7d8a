"""An independent DDS reader (Eclipse Cyclone DDS, not ROS) for the wire test: prints what it sees as JSON lines.

Run as ``python cyclone_witness.py DOMAIN TOPIC KIND COUNT TIMEOUT``: it prints one ``{"sample": ...}``
line per sample (its CDR bytes, hex, re-serialized by Cyclone from the decoded fields), then exits.
Fast DDS sends no XTypes type information, so a DDS reader matches a writer on the topic name
(``rt/<topic>``) and the type name alone: a sample arriving at all proves the type name.
KIND is ``Float64MultiArray`` or ``Twist``; the IDL classes below are the
ROS 2 message definitions in DDS form (module ``<pkg>::msg::dds_``, type name with a trailing ``_``).
"""

import json
import sys
import time
from dataclasses import dataclass

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float64, sequence, uint32
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic


@dataclass
class MultiArrayDimension_(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    label: str
    size: uint32
    stride: uint32


@dataclass
class MultiArrayLayout_(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    dim: sequence[MultiArrayDimension_]
    data_offset: uint32


@dataclass
class Float64MultiArray_(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    layout: MultiArrayLayout_
    data: sequence[float64]


@dataclass
class Vector3_(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    x: float64
    y: float64
    z: float64


@dataclass
class Twist_(IdlStruct, typename="geometry_msgs::msg::dds_::Twist_"):
    linear: Vector3_
    angular: Vector3_


KINDS = {"Float64MultiArray": Float64MultiArray_, "Twist": Twist_}


def main() -> None:
    domain, topic_name, kind, count, timeout = (
        int(sys.argv[1]),
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
        float(sys.argv[5]),
    )
    participant = DomainParticipant(domain)
    qos = Qos(Policy.Reliability.Reliable(0), Policy.Durability.Volatile, Policy.History.KeepLast(10))
    topic = Topic(participant, f"rt{topic_name}", KINDS[kind], qos=qos)
    reader = DataReader(participant, topic, qos=qos)
    received = 0
    end = time.monotonic() + timeout
    while time.monotonic() < end and received < count:
        for sample in reader.take(N=10):
            received += 1
            print(json.dumps({"sample": sample.serialize().hex()}), flush=True)
        time.sleep(0.005)


if __name__ == "__main__":
    main()

// A test SMSC for sftpsms's SMPP gateway tests, on node-smpp (a peer we did not write).
//
//   node smsc.js PORT        (PORT 0: any free port)
//
// It accepts bind_transceiver (any credentials, or only system_id/password from "config"), answers
// submit_sm with decimal message ids, and sends delivery receipts as configured. The test drives it
// with one JSON command per stdin line, and reads one JSON event per stdout line:
//
//   {"cmd": "config", "receipts": "none"|"first"|"each", "ids": "dec"|"hex", "tlv": true|false,
//    "stat": "DELIVRD", "events": true|false, "enquire_link": true|false (answer them or not)}
//   {"cmd": "throttle", "count": 2, "status": 88}   the next 2 submit_sm get that status (0x58)
//   {"cmd": "silence", "count": 1, "after": 1}       after 1 more, 1 submit_sm gets no answer at all
//   {"cmd": "drop"}                                  close every connection
//   {"cmd": "mo", "from": "447700900001", "to": "Acme", "text": "STOP"}
//        optional: "udh": "050003A70201" (hex user data header with its length octet: a part of a long reply),
//        "sar": {"ref": 7, "total": 2, "seq": 1} (the same in sar_* TLVs), "data_coding": 8,
//        "schedule": "261125104300000+" (schedule_delivery_time)
//   {"cmd": "enquire_link"}                          ask each session whether it is alive
//   {"cmd": "ping", "id": 7}                         answered with {"event": "pong", "id": 7}
//
// Events: listening {port}, bind {system_id}, submit {id, dest, source, esm_class, data_coding,
// udh (hex), text}, throttled {dest}, silenced {dest}, enquire_link, enquire_link_resp, deliver_sm_resp {status},
// unbind, close.
'use strict';

const readline = require('readline');
const smpp = require('smpp');

const config = {receipts: 'none', ids: 'dec', tlv: false, stat: 'DELIVRD', events: true, enquire_link: true};
let throttle = {count: 0, status: 0x58};
let silence = {count: 0, after: 0};
let nextId = 1000000;
const sessions = new Set();

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function spell(id) {
  return config.ids === 'hex' ? id.toString(16).toUpperCase().padStart(8, '0') : String(id);
}

function sendReceipt(session, id, pdu) {
  const stamp = '2611251043';
  const text = `id:${spell(id)} sub:001 dlvrd:001 submit date:${stamp} done date:${stamp} ` +
    `stat:${config.stat} err:000 text:`;
  const receipt = {
    source_addr: pdu.destination_addr,
    destination_addr: pdu.source_addr,
    esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT,
    data_coding: 0,
    short_message: text,
  };
  if (config.tlv) {
    receipt.receipted_message_id = spell(id);
  }
  session.deliver_sm(receipt, (resp) => {
    if (config.events) emit({event: 'deliver_sm_resp', status: resp.command_status, id: spell(id)});
  });
}

const server = smpp.createServer({debug: false}, (session) => {
  sessions.add(session);
  session.on('error', () => {});
  session.on('close', () => {
    sessions.delete(session);
    emit({event: 'close'});
  });
  session.on('bind_transceiver', (pdu) => {
    emit({event: 'bind', system_id: pdu.system_id});
    if (config.system_id !== undefined &&
        (pdu.system_id !== config.system_id || pdu.password !== config.password)) {
      session.send(pdu.response({command_status: smpp.ESME_RBINDFAIL}));
      return;
    }
    session.send(pdu.response({system_id: 'testsmsc'}));
  });
  session.on('submit_sm', (pdu) => {
    if (silence.count > 0 && silence.after-- <= 0) {
      silence.count -= 1;
      emit({event: 'silenced', dest: pdu.destination_addr});
      return;
    }
    if (throttle.count > 0) {
      throttle.count -= 1;
      emit({event: 'throttled', dest: pdu.destination_addr});
      session.send(pdu.response({command_status: throttle.status}));
      return;
    }
    const id = nextId++;
    const message = pdu.short_message || {};
    const udh = (message.udh || []).map((part) => part.toString('hex')).join('');
    if (config.events) {
      emit({
        event: 'submit', id: String(id), dest: pdu.destination_addr, source: pdu.source_addr,
        esm_class: pdu.esm_class, data_coding: pdu.data_coding, udh, text: message.message,
      });
    }
    session.send(pdu.response({message_id: String(id)}));
    const first = !udh || udh.endsWith('01');
    if (config.receipts === 'each' || (config.receipts === 'first' && first)) {
      sendReceipt(session, id, pdu);
    }
  });
  session.on('enquire_link', (pdu) => {
    emit({event: 'enquire_link'});
    if (config.enquire_link) session.send(pdu.response());
  });
  session.on('unbind', (pdu) => {
    emit({event: 'unbind'});
    session.send(pdu.response());
    session.close();
  });
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  emit({event: 'listening', port: server.address().port});
});

readline.createInterface({input: process.stdin}).on('line', (line) => {
  const command = JSON.parse(line);
  switch (command.cmd) {
    case 'config':
      Object.assign(config, command);
      delete config.cmd;
      break;
    case 'throttle':
      throttle = {count: command.count, status: command.status || 0x58};
      break;
    case 'silence':
      silence = {count: command.count, after: command.after || 0};
      break;
    case 'drop':
      for (const session of sessions) session.destroy();
      break;
    case 'mo':
      for (const session of sessions) {
        const mo = {
          source_addr: command.from, destination_addr: command.to, esm_class: 0,
          data_coding: command.data_coding || 0,
          short_message: command.udh ? {udh: Buffer.from(command.udh, 'hex'), message: command.text} : command.text,
        };
        if (command.sar) {
          mo.sar_msg_ref_num = command.sar.ref;
          mo.sar_total_segments = command.sar.total;
          mo.sar_segment_seqnum = command.sar.seq;
        }
        if (command.schedule) mo.schedule_delivery_time = command.schedule;
        session.deliver_sm(mo, (resp) => emit({event: 'deliver_sm_resp', status: resp.command_status}));
      }
      break;
    case 'enquire_link':
      for (const session of sessions) {
        session.enquire_link({}, (resp) => emit({event: 'enquire_link_resp', status: resp.command_status}));
      }
      break;
    case 'ping':
      emit({event: 'pong', id: command.id});
      break;
    default:
      emit({event: 'error', detail: `unknown command ${command.cmd}`});
  }
});
process.stdin.on('end', () => process.exit(0));

"""``email``: SMTP with STARTTLS and AUTH (smtplib, in a thread).

The subject reads ``[Tandem CRITICAL] demo/primary: <message>``; the body says what, where,
why, since when, what to do and links to the console. A cleared alert gets a resolved mail.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from tandem.events.catalog.notifications import ChannelKind
from tandem.notifier.channels.base import Context, DeliveryError, Sent
from tandem.notifier.config import EmailChannel
from tandem.notifier.notification import Notification
from tandem.notifier.payloads import mail_subject, mail_text


class EmailSender:
    kind: ChannelKind = "email"

    def __init__(self, channel: EmailChannel) -> None:
        self.channel = channel

    def message(self, n: Notification, ctx: Context) -> EmailMessage:
        c = self.channel
        msg = EmailMessage()
        msg["Subject"] = mail_subject(n)
        msg["From"] = c.sender
        msg["To"] = ", ".join(c.to)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(idstring=n.event.id, domain="tandem")
        msg["X-Tandem-Event-Id"] = n.event.id
        msg["X-Tandem-Fingerprint"] = n.fingerprint
        msg["X-Tandem-Status"] = n.status
        console = c.console_url or ctx.external_url
        msg.set_content(mail_text(n, console_url=console, held_back=ctx.held_back))
        return msg

    async def send(self, n: Notification, ctx: Context) -> Sent:
        msg = self.message(n, ctx)
        try:
            answer = await asyncio.to_thread(self._send, msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {self.channel.host}:{self.channel.port}: {exc}") from None
        return Sent(answer)

    def _send(self, msg: EmailMessage) -> str:
        c = self.channel
        with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
            smtp.ehlo()
            if c.starttls:
                cafile = str(c.ca_file) if c.ca_file is not None else None
                smtp.starttls(context=ssl.create_default_context(cafile=cafile))
                smtp.ehlo()
            if c.username is not None and c.password_file is not None:
                smtp.login(c.username, c.password_file.get_secret_value())
            refused = smtp.send_message(msg)
            code, text = smtp.noop()
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        return f"sent to {len(c.to)} recipients ({code} {text.decode(errors='replace')})"
